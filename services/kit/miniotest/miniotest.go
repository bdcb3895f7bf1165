// Package miniotest gives tests a real S3-compatible server: one MinIO
// server per test binary, started the first time a test asks for it, with
// its data in a temporary directory, and a fresh bucket per test.
//
// The server binary is $MINIO_BIN, or else <repository>/.tools/bin/minio,
// which `make tools` installs (MinIO is AGPL-3.0: it runs only as a separate
// process in tests; nothing links it). When it is missing the test fails,
// saying so: S3 tests are never skipped silently.
//
// Use it from TestMain, so that the server is stopped and its data removed
// when the tests end (also on SIGINT/SIGTERM):
//
//	func TestMain(m *testing.M) { miniotest.Main(m) }
//
// and in a test:
//
//	srv := miniotest.Start(t)
//	bucket := srv.Bucket(t) // a new, empty bucket, removed after the test
//	url := srv.URL(bucket)  // s3://bucket?endpoint=...&region=...&use_path_style=true
//	// credentials: srv.AccessKey, srv.SecretKey, passed explicitly (not
//	// through the environment, so tests can run in parallel).
//
// A package whose TestMain is already taken (pgtest.Main) can use Start
// without Main: the server then dies with the test binary (parent-death
// signal), and its leftover directory is removed by the next test binary
// that starts a server.
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Region is the region the server and its URLs use.
const Region = "us-east-1"

// Server is a running MinIO server.
type Server struct {
	// Endpoint is the server's base URL, http://127.0.0.1:<port>.
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey string
	SecretKey string

	dir     string
	logFile string
	cmd     *exec.Cmd
	exited  chan struct{}
	release func() // lets the goroutine that started the process end
	client  *s3.Client
	buckets atomic.Int64
}

var (
	mu       sync.Mutex
	shared   *Server
	startErr error
)

// Main runs the package's tests, then stops the server (if one was started)
// and removes its data, also when the run is interrupted.
func Main(m *testing.M) {
	os.Exit(Run(m.Run))
}

// Run is Main for TestMains that do more: it runs tests and returns their
// exit code after stopping the server.
func Run(tests func() int) int {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig, ok := <-signals
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "miniotest: %v: stopping the MinIO server\n", sig)
		stopShared()
		os.Exit(130)
	}()
	code := tests()
	signal.Stop(signals)
	stopShared()
	return code
}

func stopShared() {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		shared.stop()
		shared = nil
	}
}

// Start returns the test binary's MinIO server, starting it on first use.
// It fails the test if the server cannot be started, for instance because
// its binary is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && startErr == nil {
		shared, startErr = start()
	}
	if startErr != nil {
		t.Fatalf("miniotest: %v", startErr)
	}
	return shared
}

// Binary returns the path of the MinIO server binary: $MINIO_BIN, or
// <repository>/.tools/bin/minio where the repository is the nearest
// directory above the working directory holding go.work. The error says
// how to install it.
func Binary() (string, error) {
	if p := os.Getenv("MINIO_BIN"); p != "" {
		if err := isExecutable(p); err != nil {
			return "", fmt.Errorf("MINIO_BIN=%s: %w (unset MINIO_BIN to use .tools/bin/minio, which `make tools` installs)", p, err)
		}
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("cannot find the MinIO server binary: %w; set MINIO_BIN, or run `make tools` in the repository, which installs it into .tools/bin", err)
	}
	p := filepath.Join(root, ".tools", "bin", "minio")
	if err := isExecutable(p); err != nil {
		return "", fmt.Errorf("MinIO server binary %s: %w: run `make tools` (it installs MinIO into .tools/bin; building it takes a few minutes), or set MINIO_BIN", p, err)
	}
	return p, nil
}

func isExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("not found")
		}
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}

const dirPrefix = "platforma-miniotest-"

func start() (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	removeStaleDirs()
	dir, err := os.MkdirTemp("", dirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, err
	}
	s := &Server{
		AccessKey: "miniotest",
		SecretKey: randomHex(16),
		dir:       dir,
		logFile:   filepath.Join(dir, "minio.log"),
	}
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		err = s.startProcess(bin)
		if err == nil {
			break
		}
		// Another process may have taken the port between freePort and
		// MinIO's bind: try another.
		if !errors.Is(err, errExitedEarly) || attempt == 4 {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	return s, nil
}

var errExitedEarly = errors.New("minio exited during start-up")

func (s *Server) startProcess(bin string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	consolePort, err := freePort()
	if err != nil {
		return err
	}
	log, err := os.OpenFile(s.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close() // the child has its own descriptor
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "server", "--quiet",
		"--address", addr,
		"--console-address", fmt.Sprintf("127.0.0.1:%d", consolePort),
		filepath.Join(s.dir, "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_REGION="+Region,
		// MinIO looks for certificates under $HOME/.minio: keep it in ours.
		"HOME="+s.dir,
	)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Dies with the test binary even if Main's clean-up never runs.
		Pdeathsig: syscall.SIGKILL,
		// Own process group: a Ctrl-C for `go test` is not also MinIO's.
		Setpgid: true,
	}
	// Linux sends the parent-death signal when the thread that started
	// the child exits, not the process; Go may end idle threads. Start it
	// from a goroutine locked to its thread that lives as long as the
	// server does.
	started := make(chan error, 1)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		<-release
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start minio: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.release = cmd, exited, sync.OnceFunc(func() { close(release) })
	s.Endpoint = "http://" + addr
	s.client = s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
	if err := s.waitReady(); err != nil {
		s.kill()
		return err
	}
	return nil
}

func (s *Server) waitReady() error {
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				// Ready can come before the object layer is: S3 calls
				// then fail with XMinioServerNotInitialized (seen in CI).
				// Ready is when one answers.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err = s.client.ListBuckets(ctx, &s3.ListBucketsInput{})
				cancel()
				if err == nil {
					return nil
				}
			} else {
				err = fmt.Errorf("health check: %s", resp.Status)
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%w: %s", errExitedEarly, s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("minio not ready after 60s: %v: %s", err, s.logTail())
		}
	}
}

// logTail is the end of the server's log, for error messages.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logFile)
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return strings.TrimSpace(string(b))
}

// stop ends the server (SIGTERM, then SIGKILL after 10 s) and removes its
// data.
func (s *Server) stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
			s.release()
		case <-time.After(10 * time.Second):
			s.kill()
		}
	}
	_ = os.RemoveAll(s.dir)
}

// kill kills the server and waits for it to exit.
func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.release()
}

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Client is an S3 client for the server, as root.
func (s *Server) Client() *s3.Client { return s.client }

// URL is the bucket URL of bucket on this server, for gocloud.dev/blob
// openers: s3://bucket?endpoint=...&region=us-east-1&use_path_style=true.
// It carries no credentials.
func (s *Server) URL(bucket string) string {
	q := url.Values{}
	q.Set("endpoint", s.Endpoint)
	q.Set("region", Region)
	q.Set("use_path_style", "true")
	return "s3://" + bucket + "?" + q.Encode()
}

var notBucketChars = regexp.MustCompile(`[^a-z0-9-]+`)

// Bucket creates a new, empty bucket for this test and returns its name.
// The bucket and its objects are removed when the test ends.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", s.buckets.Add(1), notBucketChars.ReplaceAllString(strings.ToLower(t.Name()), "-"))
	if len(name) > 63 {
		name = name[:63]
	}
	name = strings.TrimRight(name, "-")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("miniotest: create bucket %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.removeBucket(ctx, name); err != nil {
			t.Errorf("miniotest: remove bucket %s: %v", name, err)
		}
	})
	return name
}

func (s *Server) removeBucket(ctx context.Context, name string) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(name)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, len(page.Contents))
		for i, o := range page.Contents {
			ids[i] = types.ObjectIdentifier{Key: o.Key}
		}
		if _, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(name),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		}); err != nil {
			return err
		}
	}
	_, err := s.client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(name)})
	return err
}

// removeStaleDirs removes the directories of servers whose test binary is
// gone (it was killed before its clean-up ran, or did not use Main).
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), dirPrefix)
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
