// Package tlsfiles loads TLS certificates, keys and CA bundles from PEM
// files and reloads them when the files change, without a restart:
// certificates are renewed by replacing the files (cert-manager, a
// Kubernetes secret, a cron job), and a serving process picks the new pair
// up at its next handshake.
//
// A change is noticed by the files' modification time and size, checked at
// most once per interval, on the handshake path (no goroutine, no inotify).
// A pair that fails to load (the certificate replaced and the key not yet,
// a truncated file) is logged and ignored: the last good pair is served
// until the files change again and load.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultInterval is how often the files are checked for changes.
const DefaultInterval = 5 * time.Second

// stamp identifies one version of a file.
type stamp struct {
	mod  time.Time
	size int64
}

func stat(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// watched is the reload logic shared by key pairs and CA bundles: load
// once, then again whenever a file's stamp changes, keeping the last good
// value.
type watched[T any] struct {
	what     string // for log lines: "certificate", "client CA bundle"
	files    []string
	interval time.Duration
	log      *slog.Logger
	load     func() (T, string, error) // the value and a description for the log

	mu        sync.Mutex
	cur       T
	stamps    []stamp
	failed    []stamp // the stamps that failed to load, not retried
	lastCheck time.Time
	// statFailing: the files could not be read at the last check (logged
	// once).
	statFailing bool
}

func newWatched[T any](what string, files []string, interval time.Duration, log *slog.Logger, load func() (T, string, error)) (*watched[T], error) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &watched[T]{what: what, files: files, interval: interval, log: log, load: load}
	stamps, err := w.stat()
	if err != nil {
		return nil, err
	}
	v, _, err := load()
	if err != nil {
		return nil, err
	}
	w.cur, w.stamps, w.lastCheck = v, stamps, time.Now()
	return w, nil
}

func (w *watched[T]) stat() ([]stamp, error) {
	out := make([]stamp, len(w.files))
	for i, f := range w.files {
		s, err := stat(f)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

func equalStamps(a, b []stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].mod.Equal(b[i].mod) || a[i].size != b[i].size {
			return false
		}
	}
	return true
}

// get returns the current value, reloading it first when the interval has
// passed and the files changed.
func (w *watched[T]) get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if now.Sub(w.lastCheck) < w.interval {
		return w.cur
	}
	w.lastCheck = now
	stamps, err := w.stat()
	if err != nil {
		if !w.statFailing {
			w.log.Warn("tls: cannot read the "+w.what+" files; keeping the loaded one", "files", w.files, "error", err)
			w.statFailing = true
		}
		return w.cur
	}
	w.statFailing = false
	if equalStamps(stamps, w.stamps) || equalStamps(stamps, w.failed) {
		return w.cur
	}
	v, desc, err := w.load()
	if err != nil {
		w.failed = stamps
		w.log.Error("tls: the changed "+w.what+" does not load; keeping the previous one", "files", w.files, "error", err)
		return w.cur
	}
	w.cur, w.stamps, w.failed = v, stamps, nil
	w.log.Info("tls: "+w.what+" reloaded", "files", w.files, "loaded", desc)
	return w.cur
}

// KeyPair is a certificate and its key, reloaded when the files change.
type KeyPair struct {
	w *watched[*tls.Certificate]
}

// LoadKeyPair loads a PEM certificate (with its chain) and key; it fails
// when they do not load now. interval ≤ 0 means DefaultInterval.
func LoadKeyPair(certFile, keyFile string, interval time.Duration, log *slog.Logger) (*KeyPair, error) {
	w, err := newWatched("certificate", []string{certFile, keyFile}, interval, log, func() (*tls.Certificate, string, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, "", err
		}
		return &c, describe(c.Leaf), nil
	})
	if err != nil {
		return nil, err
	}
	return &KeyPair{w: w}, nil
}

func describe(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf("subject %q, serial %s, valid until %s", c.Subject.String(), c.SerialNumber.Text(16), c.NotAfter.UTC().Format(time.RFC3339))
}

// Certificate is the current pair.
func (k *KeyPair) Certificate() *tls.Certificate { return k.w.get() }

// GetCertificate is for tls.Config.GetCertificate (servers).
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.w.get(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate (clients
// presenting a certificate).
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.w.get(), nil
}

// Pool is a CA bundle, reloaded when its file changes.
type Pool struct {
	w *watched[*x509.CertPool]
}

// LoadPool loads a PEM bundle of CA certificates; it fails when the file
// holds none.
func LoadPool(file string, interval time.Duration, log *slog.Logger) (*Pool, error) {
	w, err := newWatched("CA bundle", []string{file}, interval, log, func() (*x509.CertPool, string, error) {
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, "", err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("%s: no PEM certificate in it", file)
		}
		return pool, "", nil
	})
	if err != nil {
		return nil, err
	}
	return &Pool{w: w}, nil
}

// CertPool is the current bundle.
func (p *Pool) CertPool() *x509.CertPool { return p.w.get() }

// ServerConfig is the TLS configuration of a gRPC server: TLS 1.2 or
// newer, the certificate of pair (reloaded), and with clientCAs (nil: no
// client certificates) client certificates requested and verified when
// presented (tls.VerifyClientCertIfGiven), so callers without one (bearer
// tokens) can still connect. The bundle is reloaded too.
func ServerConfig(pair *KeyPair, clientCAs *Pool) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
		GetCertificate: pair.GetCertificate,
	}
	if clientCAs == nil {
		return base
	}
	base.ClientAuth = tls.VerifyClientCertIfGiven
	base.ClientCAs = clientCAs.CertPool()
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = clientCAs.CertPool()
		return c, nil
	}
	return base
}

// ClientConfig is the TLS configuration of a client: the server verified
// against caFile (empty: the system's roots) and, with certFile and
// keyFile, a client certificate presented (reloaded when the files
// change). TLS 1.2 or newer.
func ClientConfig(caFile, certFile, keyFile string, log *slog.Logger) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and its key file")
	}
	if certFile != "" {
		pair, err := LoadKeyPair(certFile, keyFile, 0, log)
		if err != nil {
			return nil, err
		}
		c.GetClientCertificate = pair.GetClientCertificate
	}
	return c, nil
}
