package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/profile"
)

// TestPageTokenKeyRotation runs the binary with the keys of each step of
// a rotation (README, "Running a service") on one database: a token stays
// good while its key is in the ring, and only that long.
func TestPageTokenKeyRotation(t *testing.T) {
	t.Parallel()
	grpcService := profilev1.ProfileService_ServiceDesc.ServiceName
	oldKey, err := pagetoken.GenerateKey("old")
	require.NoError(t, err)
	newKey, err := pagetoken.GenerateKey("new")
	require.NoError(t, err)
	secretOf := func(key string) string { return key[strings.IndexByte(key, ':')+1:] }

	s := apptest.Start(t, profile.Service(), grpcService, "-page-token-keys="+oldKey)
	client := profilev1.NewProfileServiceClient(s.Conn)
	for i := range 3 {
		_, err := client.RecordLoginResult(context.Background(), &profilev1.RecordLoginResultRequest{
			EventId: uuid.NewString(), UserId: uuid.NewString(), PlatformAccountId: "acct",
			Outcome: commonv1.Outcome_OUTCOME_SUCCESS, OccurredAt: timestamppb.New(time.Now().Add(-time.Duration(i) * time.Minute)),
		})
		require.NoError(t, err)
	}
	page := func(s *apptest.Service, token string) (string, error) {
		resp, err := profilev1.NewProfileServiceClient(s.Conn).ListProfiles(context.Background(),
			&profilev1.ListProfilesRequest{PageSize: 1, PageToken: token})
		return resp.GetNextPageToken(), err
	}
	oldToken, err := page(s, "")
	require.NoError(t, err)
	require.NotEmpty(t, oldToken)
	assert.Contains(t, s.Logs(), `msg="page token keys" service=profile signing=old key_ids=[old]`)
	assert.NotContains(t, s.Logs(), secretOf(oldKey), "keys are never logged")
	assert.NotContains(t, s.Logs(), "PAGE_TOKEN_KEYS not set")
	s.Stop()

	// The new key signs, the old one still verifies.
	s = apptest.Run(t, profile.Service(), s.DatabaseURL, grpcService, "-page-token-keys="+newKey+","+oldKey)
	newToken, err := page(s, oldToken)
	require.NoError(t, err, "a token of the old key, still in the ring")
	require.NotEmpty(t, newToken)
	s.Stop()

	// The old key removed; keys from a file this time.
	file := filepath.Join(t.TempDir(), "page-token-keys")
	require.NoError(t, os.WriteFile(file, []byte(newKey+"\n"), 0o600))
	s = apptest.Run(t, profile.Service(), s.DatabaseURL, grpcService, "-page-token-keys-file="+file)
	_, err = page(s, oldToken)
	apptest.RefusedPageToken(t, err, "a token of a removed key")
	_, err = page(s, newToken)
	require.NoError(t, err)
	s.Stop()

	// No keys: a random one, and a warning.
	s = apptest.Run(t, profile.Service(), s.DatabaseURL, grpcService)
	_, err = page(s, newToken)
	apptest.RefusedPageToken(t, err, "a token of a configured key, on a process with a random one")
	assert.Contains(t, s.Logs(), `level=WARN msg="PAGE_TOKEN_KEYS not set`)
	own, err := page(s, "")
	require.NoError(t, err)
	_, err = page(s, own)
	require.NoError(t, err, "the process's own tokens work")
}
