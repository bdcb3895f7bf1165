package miniotest_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/miniotest"
)

func TestMain(m *testing.M) { miniotest.Main(m) }

func TestBucketsAreFreshAndShareOneServer(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	assert.Same(t, srv, miniotest.Start(t), "one server per test binary")
	assert.True(t, strings.HasPrefix(srv.Endpoint, "http://127.0.0.1:"), srv.Endpoint)
	assert.NoError(t, syscall.Kill(srv.Pid(), 0), "the server runs")

	ctx := t.Context()
	c := srv.Client()
	b1, b2 := srv.Bucket(t), srv.Bucket(t)
	assert.NotEqual(t, b1, b2)
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b1), Key: aws.String("dir/k"), Body: strings.NewReader("hello")})
	require.NoError(t, err)
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b1), Key: aws.String("dir/k")})
	require.NoError(t, err)
	body, err := io.ReadAll(out.Body)
	out.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, "hello", string(body))

	list, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(b2)})
	require.NoError(t, err)
	assert.Empty(t, list.Contents, "a new bucket is empty")

	u := srv.URL(b1)
	assert.Contains(t, u, "s3://"+b1+"?")
	assert.Contains(t, u, "use_path_style=true")
	assert.Contains(t, u, "region="+miniotest.Region)
}

func TestBucketIsRemovedAfterTheTest(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		name = srv.Bucket(t)
		_, err := srv.Client().PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(name), Key: aws.String("k"), Body: strings.NewReader("x")})
		require.NoError(t, err)
	})
	// MinIO answers HeadBucket from a cache that can lag its DeleteBucket
	// by a moment: removed means gone within a few seconds.
	require.Eventually(t, func() bool {
		_, err := srv.Client().HeadBucket(context.Background(), &s3.HeadBucketInput{Bucket: aws.String(name)})
		var nf *types.NotFound
		return errors.As(err, &nf)
	}, 10*time.Second, 50*time.Millisecond, "bucket %s still exists 10 s after its test", name)
}

func TestCredentialsAreChecked(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.Bucket(t)
	c := s3.New(s3.Options{
		Region:       miniotest.Region,
		BaseEndpoint: aws.String(srv.Endpoint),
		UsePathStyle: true,
		Credentials:  aws.AnonymousCredentials{},
	})
	_, err := c.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("k"), Body: strings.NewReader("x")})
	require.Error(t, err, "anonymous writes are refused")
}

func TestBinary(t *testing.T) {
	// Not parallel: it sets MINIO_BIN.
	t.Setenv("MINIO_BIN", filepath.Join(t.TempDir(), "no-such-minio"))
	_, err := miniotest.Binary()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "make tools")

	notExec := filepath.Join(t.TempDir(), "minio")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	t.Setenv("MINIO_BIN", notExec)
	_, err = miniotest.Binary()
	require.ErrorContains(t, err, "not an executable")

	t.Setenv("MINIO_BIN", "")
	p, err := miniotest.Binary()
	require.NoError(t, err, "`make tools` installs .tools/bin/minio")
	assert.True(t, strings.HasSuffix(p, filepath.Join(".tools", "bin", "minio")), p)
}
