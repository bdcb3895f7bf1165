package coldstore

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	gcaws "gocloud.dev/aws"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/s3blob"
)

// Credentials are static S3 credentials for OpenBucketWith.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string // optional
}

// OpenBucket opens the blob bucket at url:
//
//   - "file:///abs/dir", or a plain absolute path "/abs/dir": a local
//     directory (created if missing). Objects are plain files under it;
//     partial writes go to temporary files next to them and are renamed
//     into place on completion.
//   - "s3://bucket?endpoint=http://127.0.0.1:9000&region=us-east-1&use_path_style=true":
//     an S3 or S3-compatible bucket, with credentials from the AWS SDK's
//     default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, shared
//     config, instance roles). Query parameters: endpoint, region,
//     use_path_style (or s3ForcePathStyle), disable_https, and those of
//     gocloud.dev/aws.V2ConfigFromURLParams (profile, fips, dualstack,
//     anonymous, ...).
//
// The caller closes the bucket.
func OpenBucket(ctx context.Context, url string) (*blob.Bucket, error) {
	return OpenBucketWith(ctx, url, Credentials{})
}

// OpenBucketWith is OpenBucket with explicit S3 credentials, used instead
// of the default chain when AccessKeyID is set (tests pass a MinIO
// server's keys this way rather than through the process environment).
func OpenBucketWith(ctx context.Context, rawURL string, creds Credentials) (*blob.Bucket, error) {
	if strings.HasPrefix(rawURL, "/") {
		return openDir(rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("coldstore: bucket url: %w", err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("coldstore: bucket url %q: want file:///absolute/dir", rawURL)
		}
		if len(u.Query()) > 0 {
			return nil, fmt.Errorf("coldstore: bucket url %q: file urls take no parameters", rawURL)
		}
		return openDir(u.Path)
	case "s3":
		return openS3(ctx, u, creds)
	default:
		return nil, fmt.Errorf("coldstore: bucket url %q: unsupported scheme (want file:// or s3://)", rawURL)
	}
}

func openDir(dir string) (*blob.Bucket, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("coldstore: bucket directory %q is not absolute", dir)
	}
	b, err := fileblob.OpenBucket(filepath.Clean(dir), &fileblob.Options{
		CreateDir: true,
		// Temporary files next to the final ones: os.TempDir may be on
		// another file system, where the final rename would fail.
		NoTempDir: true,
		// No ".attrs" sidecar files: nothing here uses blob attributes.
		Metadata: fileblob.MetadataDontWrite,
	})
	if err != nil {
		return nil, fmt.Errorf("coldstore: open %s: %w", dir, err)
	}
	return b, nil
}

func openS3(ctx context.Context, u *url.URL, creds Credentials) (*blob.Bucket, error) {
	if u.Host == "" {
		return nil, fmt.Errorf("coldstore: bucket url %q has no bucket name", u.Redacted())
	}
	q := u.Query()
	var opts []func(*s3.Options)
	for _, key := range []string{"use_path_style", "s3ForcePathStyle", "disable_https"} {
		v := q.Get(key)
		if v == "" {
			q.Del(key)
			continue
		}
		q.Del(key)
		on, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("coldstore: bucket url: %s=%q: %w", key, v, err)
		}
		if key == "disable_https" {
			opts = append(opts, func(o *s3.Options) { o.EndpointOptions.DisableHTTPS = on })
		} else {
			opts = append(opts, func(o *s3.Options) { o.UsePathStyle = on })
		}
	}
	cfg, err := gcaws.V2ConfigFromURLParams(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("coldstore: bucket url %q: %w", u.Redacted(), err)
	}
	if creds.AccessKeyID != "" {
		cfg.Credentials = aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken))
	}
	client := s3.NewFromConfig(cfg, opts...)
	b, err := s3blob.OpenBucket(ctx, client, u.Host, &s3blob.Options{
		RequestChecksumCalculation: cfg.RequestChecksumCalculation,
	})
	if err != nil {
		return nil, fmt.Errorf("coldstore: open s3 bucket %s: %w", u.Host, err)
	}
	return b, nil
}
