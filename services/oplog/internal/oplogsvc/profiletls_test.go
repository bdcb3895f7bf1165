package oplogsvc

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProfileTLSSettingsAreValidated(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    ProfileTLS
		addr string
		want []string
	}{
		{name: "no relay, nothing needed", addr: ""},
		{name: "mutual TLS", addr: "profile:50051", p: ProfileTLS{CAFile: "ca", CertFile: "c", KeyFile: "k"}},
		{name: "a token over TLS", addr: "profile:50051", p: ProfileTLS{TokenFile: "t"}},
		{name: "a token over plaintext", addr: "profile:50051", p: ProfileTLS{Insecure: true, TokenFile: "t"}},
		{name: "no credential", addr: "profile:50051", p: ProfileTLS{CAFile: "ca"}, want: []string{"the relay needs a credential"}},
		{name: "cert without key", addr: "profile:50051", p: ProfileTLS{CertFile: "c"}, want: []string{"go together"}},
		{name: "plaintext with TLS files", addr: "profile:50051", p: ProfileTLS{Insecure: true, CertFile: "c", KeyFile: "k"}, want: []string{"PROFILE_INSECURE (-profile-insecure) is plaintext"}},
	}
	for _, tt := range tests {
		err := errors.Join(tt.p.validate(tt.addr)...)
		if len(tt.want) == 0 {
			assert.NoError(t, err, tt.name)
			continue
		}
		require.Error(t, err, tt.name)
		for _, w := range tt.want {
			assert.Contains(t, err.Error(), w, tt.name)
		}
	}
}

func TestTokenFileIsReadAgainWhenItChanges(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("first\n"), 0o600))
	p := ProfileTLS{TokenFile: file, Insecure: true}
	opts, err := p.dialOptions(slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.Len(t, opts, 2)

	tf := &tokenFile{path: file}
	md, err := tf.GetRequestMetadata(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Bearer first", md["authorization"])
	require.NoError(t, os.WriteFile(file, []byte("second"), 0o600))
	require.NoError(t, os.Chtimes(file, time.Now().Add(time.Minute), time.Now().Add(time.Minute)))
	tf.mu.Lock()
	tf.checked = time.Time{} // as if 5 s had passed
	tf.mu.Unlock()
	md, err = tf.GetRequestMetadata(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Bearer second", md["authorization"])

	_, err = (&ProfileTLS{TokenFile: filepath.Join(t.TempDir(), "missing")}).dialOptions(slog.New(slog.DiscardHandler))
	assert.ErrorContains(t, err, "PROFILE_TOKEN_FILE")
}
