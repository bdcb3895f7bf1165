package oplogsvc_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/pgtest"
)

// listCursor is ListOperationLogs' cursor: the window of the first page
// and the last row's create_time, in Unix microseconds, then its id.
func listCursor(since, until, at time.Time, id uuid.UUID) []byte {
	var b []byte
	for _, t := range []time.Time{since, until, at} {
		b = binary.BigEndian.AppendUint64(b, uint64(t.UnixMicro()))
	}
	return append(b, id[:]...)
}

// TestListOperationLogsRefusesForgedTokens: a token minted with the
// window 1-9999 used to list past the 92-day limit. Now a token must carry
// the server's MAC, and even a signed token's window must be one the
// request could have had on its first page.
func TestListOperationLogsRefusesForgedTokens(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	user := uuid.NewString()
	var logs []*oplogv1.OperationLog
	for _, age := range []time.Duration{time.Hour, 2 * time.Hour, 3 * time.Hour} {
		l := row(clock.Add(-age))
		l.UserId = user
		logs = append(logs, l)
	}
	ingestAll(t, client, logs)

	byUser := &oplogv1.ListOperationLogsRequest{UserId: user}
	lastTwoDays := &oplogv1.ListOperationLogsRequest{UserId: user, Since: timestamppb.New(clock.Add(-48 * time.Hour))}
	untilYesterday := &oplogv1.ListOperationLogsRequest{UserId: user, Until: timestamppb.New(clock.Add(-24 * time.Hour))}
	tooLong := &oplogv1.ListOperationLogsRequest{UserId: user, Since: timestamppb.New(clock.Add(-93 * 24 * time.Hour)), Until: timestamppb.New(clock)}
	week := 7 * 24 * time.Hour
	sign := func(keys *pagetoken.Keyring, filter *oplogv1.ListOperationLogsRequest, cursor []byte) string {
		token, err := keys.Encode(filter, cursor)
		require.NoError(t, err)
		return token
	}
	list := func(filter *oplogv1.ListOperationLogsRequest, token string) (*oplogv1.ListOperationLogsResponse, error) {
		req := proto.Clone(filter).(*oplogv1.ListOperationLogsRequest)
		req.PageSize, req.PageToken = 10, token
		return client.ListOperationLogs(ctx, req)
	}

	// Controls: signed with the server's key, windows the first page
	// could have had; positions after the first row.
	at := clock.Add(-time.Hour)
	resp, err := list(byUser, sign(apptest.PageTokens(), byUser, listCursor(clock.Add(-week), clock, at, uuid.Max)))
	require.NoError(t, err)
	assert.Len(t, resp.GetOperationLogs(), 3)
	resp, err = list(byUser, sign(apptest.PageTokens(), byUser, listCursor(clock.Add(-week), clock, at, uuid.Nil)))
	require.NoError(t, err)
	assert.Len(t, resp.GetOperationLogs(), 2)
	_, err = list(lastTwoDays, sign(apptest.PageTokens(), lastTwoDays, listCursor(clock.Add(-48*time.Hour), clock, at, uuid.Nil)))
	require.NoError(t, err)
	_, err = list(untilYesterday, sign(apptest.PageTokens(), untilYesterday, listCursor(clock.Add(-24*time.Hour-week), clock.Add(-24*time.Hour), clock.Add(-25*time.Hour), uuid.Nil)))
	require.NoError(t, err)

	year1 := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	year9999 := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	for name, tc := range map[string]struct {
		filter *oplogv1.ListOperationLogsRequest
		token  string
	}{
		"unkeyed token, years 1-9999 (the issue's)": {byUser, apptest.UnkeyedPageToken(byUser, listCursor(year1, year9999, year9999, uuid.Max))},
		"unkeyed token, a valid window":             {byUser, apptest.UnkeyedPageToken(byUser, listCursor(clock.Add(-week), clock, at, uuid.Max))},
		"another process's key":                     {byUser, sign(pagetoken.NewRandomKeyring(), byUser, listCursor(clock.Add(-week), clock, at, uuid.Max))},
		"signed, years 1-9999":                      {byUser, sign(apptest.PageTokens(), byUser, listCursor(year1, year9999, clock, uuid.Max))},
		"signed, 93 days asked and given":           {tooLong, sign(apptest.PageTokens(), tooLong, listCursor(clock.Add(-93*24*time.Hour), clock, at, uuid.Max))},
		"signed, since after until":                 {byUser, sign(apptest.PageTokens(), byUser, listCursor(clock, clock.Add(-week), at, uuid.Max))},
		"signed, empty window":                      {byUser, sign(apptest.PageTokens(), byUser, listCursor(clock, clock, clock, uuid.Max))},
		"signed, ends in the future":                {byUser, sign(apptest.PageTokens(), byUser, listCursor(clock.Add(time.Hour-week), clock.Add(time.Hour), at, uuid.Max))},
		"signed, default window of 8 days":          {byUser, sign(apptest.PageTokens(), byUser, listCursor(clock.Add(-8*24*time.Hour), clock, at, uuid.Max))},
		"signed, since other than asked":            {lastTwoDays, sign(apptest.PageTokens(), lastTwoDays, listCursor(clock.Add(-72*time.Hour), clock, at, uuid.Max))},
		"signed, until past the one asked":          {untilYesterday, sign(apptest.PageTokens(), untilYesterday, listCursor(clock.Add(-week), clock, at, uuid.Max))},
		"signed, position before the window":        {byUser, sign(apptest.PageTokens(), byUser, listCursor(clock.Add(-week), clock, clock.Add(-8*24*time.Hour), uuid.Max))},
		"signed, position after the window":         {byUser, sign(apptest.PageTokens(), byUser, listCursor(clock.Add(-week), clock, clock.Add(time.Minute), uuid.Max))},
		"signed, no position":                       {byUser, sign(apptest.PageTokens(), byUser, listCursor(clock.Add(-week), clock, at, uuid.Max)[:24])},
	} {
		_, err := list(tc.filter, tc.token)
		apptest.RefusedPageToken(t, err, name)
	}
}

func TestListLoginDeadLettersRefusesForgedTokens(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	filter := &oplogv1.ListLoginDeadLettersRequest{}
	sign := func(keys *pagetoken.Keyring, cursor []byte) string {
		token, err := keys.Encode(filter, cursor)
		require.NoError(t, err)
		return token
	}
	list := func(token string) error {
		_, err := client.ListLoginDeadLetters(context.Background(), &oplogv1.ListLoginDeadLettersRequest{PageToken: token})
		return err
	}
	id := uuid.New()
	require.NoError(t, list(sign(apptest.PageTokens(), id[:])), "control: signed with the server's key")
	for name, token := range map[string]string{
		"unkeyed token":         apptest.UnkeyedPageToken(filter, id[:]),
		"another process's key": sign(pagetoken.NewRandomKeyring(), id[:]),
		"signed, not a uuid":    sign(apptest.PageTokens(), id[:15]),
		"signed, the nil uuid":  sign(apptest.PageTokens(), uuid.Nil[:]),
	} {
		apptest.RefusedPageToken(t, list(token), name)
	}
}
