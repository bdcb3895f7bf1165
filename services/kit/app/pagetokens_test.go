package app

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/pagetoken"
)

func TestPageTokenKeysConfig(t *testing.T) {
	t.Parallel()
	k1, err := pagetoken.GenerateKey("k1")
	require.NoError(t, err)
	k2, err := pagetoken.GenerateKey("k2")
	require.NoError(t, err)
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(file, []byte(k2+"\n"+k1+"\n"), 0o600))

	keysOf := func(args []string, env map[string]string) (*pagetoken.Keyring, error) {
		var cfg serveConfig
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		cfg.register(fs, testService)
		require.NoError(t, parseFlags(fs, args, func(k string) string { return env[k] }))
		return cfg.pageTokenKeys()
	}
	keys, err := keysOf(nil, nil)
	require.NoError(t, err)
	assert.Nil(t, keys, "none configured: the service makes a random one")
	keys, err = keysOf(nil, map[string]string{"PAGE_TOKEN_KEYS": k1 + "," + k2})
	require.NoError(t, err)
	assert.Equal(t, []string{"k1", "k2"}, keys.KeyIDs())
	keys, err = keysOf([]string{"-page-token-keys-file", file}, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"k2", "k1"}, keys.KeyIDs())
	keys, err = keysOf(nil, map[string]string{"PAGE_TOKEN_KEYS_FILE": file})
	require.NoError(t, err)
	assert.Equal(t, "k2", keys.SigningKeyID())
}

func TestBadPageTokenKeysAreRefusedWithoutShowingThem(t *testing.T) {
	t.Parallel()
	const okURL = "postgres://u@localhost:5432/db"
	short := "k1:c2hvcnQgc2VjcmV0IGtleQ==" // 16 bytes
	k1, err := pagetoken.GenerateKey("k1")
	require.NoError(t, err)
	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	for name, tc := range map[string]struct {
		args     []string
		env      map[string]string
		contains string
	}{
		"short key":         {env: map[string]string{"PAGE_TOKEN_KEYS": short}, contains: `PAGE_TOKEN_KEYS (-page-token-keys): key 1 ("k1"): 16 bytes, want at least 32`},
		"no kid":            {args: []string{"-page-token-keys", k1[3:]}, contains: "PAGE_TOKEN_KEYS (-page-token-keys): key 1: want kid:base64key"},
		"duplicate kid":     {env: map[string]string{"PAGE_TOKEN_KEYS": k1 + "," + k1}, contains: `key 2: key id "k1" given twice`},
		"both":              {env: map[string]string{"PAGE_TOKEN_KEYS": k1, "PAGE_TOKEN_KEYS_FILE": empty}, contains: "set one, not both"},
		"missing file":      {args: []string{"-page-token-keys-file", "/nonexistent/keys"}, contains: "PAGE_TOKEN_KEYS_FILE (-page-token-keys-file): open /nonexistent/keys"},
		"empty file":        {env: map[string]string{"PAGE_TOKEN_KEYS_FILE": empty}, contains: "PAGE_TOKEN_KEYS_FILE (-page-token-keys-file) " + empty + ": no keys"},
		"with other errors": {env: map[string]string{"PAGE_TOKEN_KEYS": short, "LOG_LEVEL": "loud"}, contains: "LOG_LEVEL"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			env := map[string]string{"DATABASE_URL": okURL}
			for k, v := range tc.env {
				env[k] = v
			}
			code := Run(context.Background(), testService, Env{
				Args:   append([]string{"serve"}, tc.args...),
				Getenv: func(k string) string { return env[k] },
				Stderr: &stderr,
			})
			assert.Equal(t, 2, code, stderr.String())
			assert.Contains(t, stderr.String(), tc.contains)
			assert.NotContains(t, stderr.String(), k1[3:], "a key is never shown")
			assert.NotContains(t, stderr.String(), short[3:])
		})
	}
}
