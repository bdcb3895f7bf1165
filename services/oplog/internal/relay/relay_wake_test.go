package relay_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/profile"
)

const resumed = "login relay: ProfileService is serving again; resuming"

var retryIn = regexp.MustCompile(`login relay: delivery failed; retrying.* retry_in=(\S+)`)

// backoffs are the waits the relay announced after its failed
// deliveries, in order.
func backoffs(t *testing.T, logs string) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, line := range strings.Split(logs, "\n") {
		if m := retryIn.FindStringSubmatch(line); m != nil {
			d, err := time.ParseDuration(m[1])
			require.NoError(t, err, line)
			out = append(out, d)
		}
	}
	return out
}

// waitForBackoff waits until the relay of s announces a backoff of at
// least atLeast after a failed delivery, and returns it and when the test
// saw it.
func waitForBackoff(t *testing.T, s *apptest.Service, atLeast time.Duration) (time.Duration, time.Time) {
	t.Helper()
	deadline := time.Now().Add(25 * time.Second)
	for {
		if b := backoffs(t, s.Logs()); len(b) > 0 && b[len(b)-1] >= atLeast {
			return b[len(b)-1], time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay's backoff never reached %v:\n%s", atLeast, s.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// After an outage long enough for the relay's backoff to grow past 8s,
// the relay delivers within a second or so of ProfileService serving
// again: its health probe cuts the backoff short.
func TestRelayResumesPromptlyWhenProfileServiceIsBack(t *testing.T) {
	t.Parallel()
	profileAddr := freeAddr(t)
	prof := startProfile(t, "-listen-addr="+profileAddr)
	op := startOpLog(t, profileAddr)
	prof.Stop()

	user := uuid.NewString()
	require.Equal(t, int64(1), ingest(t, op, login(user, "acct-1", true, time.Now())).GetAccepted())
	// Doubling from 200ms: 12.8s after about 6 to 13 seconds of failures.
	grown, seen := waitForBackoff(t, op, 8*time.Second)
	assert.Equal(t, 1, outboxSize(t, op.DatabaseURL))

	// The same ProfileService (database, address) comes back.
	prof = apptest.Run(t, profile.Service(), prof.DatabaseURL, profileGRPC, "-listen-addr="+profileAddr)
	back := time.Now()
	eventually(t, "the waiting outcome is delivered", func() bool { return outboxSize(t, op.DatabaseURL) == 0 })
	took := time.Since(back)
	t.Logf("backoff reached %v; delivered %v after ProfileService was SERVING (%v after the backoff began)", grown, took, time.Since(seen))

	assert.Less(t, took, 2*time.Second, "delivered soon after ProfileService is back")
	// A backoff b is a wait of at least b/2 (jitter): without the wake the
	// relay would still be waiting.
	assert.Less(t, time.Since(seen), grown/2, "delivered before the backoff could have ended")
	assert.Equal(t, 1, strings.Count(op.Logs(), resumed), "one line when the relay resumes:\n%s", op.Logs())
	p, err := getProfile(t, prof, user, "acct-1")
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.GetTotalLoginCount())
}

// A ProfileService that answers its health check SERVING but refuses
// every delivery (here: the relay's certificate names no known role) is
// not retried every health probe: the backoff doubles as before.
func TestRelayBacksOffFromAProfileServiceThatServesButRefuses(t *testing.T) {
	t.Parallel()
	prof := startProfile(t)
	op := startOpLog(t, prof.Addr, relayIdentity(t, apptest.PKI(t), "spiffe://platforma/robot/relay")...)
	ingest(t, op, login(uuid.NewString(), "acct-1", true, time.Now()))

	waitForBackoff(t, op, 1600*time.Millisecond)
	got := backoffs(t, op.Logs())
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}
	require.GreaterOrEqual(t, len(got), len(want))
	assert.Equal(t, want, got[:len(want)], "the backoff doubles from InitialBackoff, never reset by the health probe")
	assert.NotContains(t, op.Logs(), resumed)
	assert.Contains(t, op.Logs(), "Unauthenticated", "ProfileService refused the deliveries")
	assert.Equal(t, 1, outboxSize(t, op.DatabaseURL))
}
