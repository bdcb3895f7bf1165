package relay_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/auth"
	"github.com/platforma/platforma/services/kit/auth/devpki"
)

// relayIdentity writes a client certificate for spiffeID, issued by p,
// and returns oplog's flags to present it to ProfileService.
func relayIdentity(t *testing.T, p *devpki.PKI, spiffeID string) []string {
	t.Helper()
	dir := t.TempDir()
	cert, err := p.ClientCert(spiffeID)
	require.NoError(t, err)
	certFile, keyFile, caFile := filepath.Join(dir, "relay.pem"), filepath.Join(dir, "relay-key.pem"), filepath.Join(dir, "ca.pem")
	require.NoError(t, devpki.WriteKeyPair(certFile, keyFile, cert))
	require.NoError(t, devpki.WriteFile(caFile, apptest.PKI(t).CAPEM)) // ProfileService's CA
	return []string{"-profile-tls-ca-file=" + caFile, "-profile-tls-cert-file=" + certFile, "-profile-tls-key-file=" + keyFile}
}

// The relay calls ProfileService over mutual TLS as
// spiffe://platforma/service/oplog (role service), and ProfileService
// knows it as that.
func TestRelayDeliversOverMutualTLSAsTheOplogService(t *testing.T) {
	t.Parallel()
	prof := startProfile(t, "-log-level=debug")
	op := startOpLog(t, prof.Addr, relayIdentity(t, apptest.PKI(t), auth.SPIFFEID("service", "oplog"))...)
	user := uuid.NewString()
	require.Equal(t, int64(1), ingest(t, op, login(user, "acct-1", true, time.Now())).GetAccepted())
	eventually(t, "the login reaches the profile", func() bool {
		p, err := getProfile(t, prof, user, "acct-1")
		return err == nil && p.GetTotalLoginCount() == 1
	})
	var lines []string
	for _, l := range strings.Split(prof.Logs(), "\n") {
		if strings.Contains(l, "grpc.method=BatchRecordLoginResults") && strings.Contains(l, "grpc.code=OK") {
			lines = append(lines, l)
		}
	}
	require.NotEmpty(t, lines, prof.Logs())
	assert.Contains(t, lines[0], "auth.subject=spiffe://platforma/service/oplog")
}

// A relay whose certificate another CA issued gets no connection: the
// outcomes wait in the outbox, and the failures are counted.
func TestRelayWithAForeignCertificateDeliversNothing(t *testing.T) {
	t.Parallel()
	prof := startProfile(t)
	foreign, err := devpki.New("", "")
	require.NoError(t, err)
	op := startOpLog(t, prof.Addr, relayIdentity(t, foreign, auth.SPIFFEID("service", "oplog"))...)
	user := uuid.NewString()
	ingest(t, op, login(user, "acct-1", true, time.Now()))
	eventually(t, "the relay reports failed deliveries", func() bool {
		return metric(t, op, "platforma_login_outbox_delivery_errors_total") > 0
	})
	assert.Equal(t, 1, outboxSize(t, op.DatabaseURL))
	assert.Zero(t, metric(t, op, "platforma_login_outbox_delivered_total"))
}
