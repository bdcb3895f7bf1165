package apptest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pgtest"
)

// ViolatedFields asserts that err is INVALID_ARGUMENT carrying a
// google.rpc.BadRequest, and returns the fields it names.
func ViolatedFields(t testing.TB, err error) []string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("want INVALID_ARGUMENT, got %v", err)
	}
	var fields []string
	for _, fv := range apierr.FieldViolations(st) {
		fields = append(fields, fv.GetField())
	}
	if len(fields) == 0 {
		t.Fatalf("INVALID_ARGUMENT without field violations: %v", err)
	}
	return fields
}

// Plan returns the JSON plan Postgres chooses for sql with args, for
// assertions on index use.
func Plan(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) string {
	t.Helper()
	var out []map[string]any
	if err := pool.QueryRow(context.Background(), "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&out); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// BenchPool is a pool on a fresh database configured like a service's
// (16 connections, the otelpgx tracer), closed when the benchmark ends.
func BenchPool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	pool, err := db.NewPool(context.Background(), db.PoolConfig{URL: pgtest.NewDatabase(b), MaxConns: 16, ConnectTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool
}

// Pages follows next_page_tokens from the first page to the last: list
// gets each page token ("" first) and returns that page's items and the
// next token. It returns every item in order and the number of pages.
func Pages[T any](t testing.TB, list func(pageToken string) (items []T, next string, err error)) ([]T, int) {
	t.Helper()
	var all []T
	token := ""
	for pages := 1; ; pages++ {
		items, next, err := list(token)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, items...)
		if next == "" {
			return all, pages
		}
		if pages > 10000 {
			t.Fatal("more than 10,000 pages: the token does not advance")
		}
		token = next
	}
}
