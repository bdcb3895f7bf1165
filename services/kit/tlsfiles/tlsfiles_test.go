package tlsfiles_test

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/kit/tlsfiles"
)

func serverCert(t *testing.T, p *devpki.PKI) tls.Certificate {
	t.Helper()
	c, err := p.ServerCert()
	require.NoError(t, err)
	return c
}

func TestKeyPairIsReloadedWhenItsFilesChange(t *testing.T) {
	t.Parallel()
	p, err := devpki.New("", "")
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	first := serverCert(t, p)
	require.NoError(t, devpki.WriteKeyPair(certFile, keyFile, first))
	var logs bytes.Buffer
	pair, err := tlsfiles.LoadKeyPair(certFile, keyFile, 20*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	serial := func() string { return pair.Certificate().Leaf.SerialNumber.String() }
	assert.Equal(t, first.Leaf.SerialNumber.String(), serial())

	second := serverCert(t, p)
	require.NoError(t, devpki.WriteKeyPair(certFile, keyFile, second))
	require.Eventually(t, func() bool { return serial() == second.Leaf.SerialNumber.String() }, 5*time.Second, 10*time.Millisecond)
	assert.Contains(t, logs.String(), "tls: certificate reloaded")

	// The certificate replaced, its key not (yet): the old pair stays,
	// once logged; then the key arrives and the pair loads.
	third := serverCert(t, p)
	dir2 := t.TempDir()
	require.NoError(t, devpki.WriteKeyPair(filepath.Join(dir2, "c.pem"), filepath.Join(dir2, "k.pem"), third))
	b, err := os.ReadFile(filepath.Join(dir2, "c.pem"))
	require.NoError(t, err)
	require.NoError(t, devpki.WriteFile(certFile, b))
	require.Eventually(t, func() bool {
		serial() // the files are checked when the pair is used
		return bytes.Contains(logs.Bytes(), []byte("does not load; keeping the previous one"))
	}, 5*time.Second, 10*time.Millisecond)
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		assert.Equal(t, second.Leaf.SerialNumber.String(), serial())
	}
	assert.Equal(t, 1, bytes.Count(logs.Bytes(), []byte("does not load")), "logged once, not at every check")
	k, err := os.ReadFile(filepath.Join(dir2, "k.pem"))
	require.NoError(t, err)
	require.NoError(t, devpki.WriteFile(keyFile, k))
	require.Eventually(t, func() bool { return serial() == third.Leaf.SerialNumber.String() }, 5*time.Second, 10*time.Millisecond)

	// Files gone: the loaded pair is kept.
	require.NoError(t, os.Remove(certFile))
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, third.Leaf.SerialNumber.String(), serial())
}

func TestServerConfigIsTLS12AtLeastAndVerifiesClientCertificatesWhenGiven(t *testing.T) {
	t.Parallel()
	p, err := devpki.New("", "")
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, devpki.WriteKeyPair(filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), serverCert(t, p)))
	require.NoError(t, devpki.WriteFile(filepath.Join(dir, "ca.pem"), p.CAPEM))
	pair, err := tlsfiles.LoadKeyPair(filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), 0, nil)
	require.NoError(t, err)
	pool, err := tlsfiles.LoadPool(filepath.Join(dir, "ca.pem"), 0, nil)
	require.NoError(t, err)
	cfg := tlsfiles.ServerConfig(pair, pool)
	assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
	assert.Equal(t, tls.VerifyClientCertIfGiven, cfg.ClientAuth)
	per, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
	require.NoError(t, err)
	assert.Equal(t, tls.VerifyClientCertIfGiven, per.ClientAuth)
	assert.Equal(t, []string{"h2"}, per.NextProtos)
	assert.Equal(t, tls.NoClientCert, tlsfiles.ServerConfig(pair, nil).ClientAuth, "no CA bundle: no client certificates")

	_, err = tlsfiles.LoadPool(filepath.Join(dir, "k.pem"), 0, nil)
	assert.Error(t, err, "a key is no CA bundle")
	_, err = tlsfiles.LoadKeyPair(filepath.Join(dir, "missing.pem"), filepath.Join(dir, "k.pem"), 0, nil)
	assert.Error(t, err)
}
