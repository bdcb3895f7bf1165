package coldstore

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Synthetic rows for the tests and the benchmark.

var testMonth = time.Date(2025, time.March, 1, 0, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

// oddTexts are values of text columns; nil is NULL, "" is an empty string.
var oddTexts = []string{
	"",
	"acct-1",
	"日本語のテキスト",
	"emoji 🎉🚀 and combining é (e\u0301)",
	"line\nbreak\ttab \"quotes\" 'single' \\backslash",
	"  leading and trailing spaces  ",
	"\u00a0\u2028\u2029\ufeff",
	"NULL",
	"a",
}

// oddJSON are jsonb::text renderings; "null" is JSON null, not SQL NULL.
var oddJSON = []string{
	`{}`,
	`[]`,
	`null`,
	`"string"`,
	`0`,
	`{"a": 1, "b": [true, false, null], "c": {"d": "ünïcödé 🎉"}}`,
	`{"quote": "\"", "nl": "\n", "u": "\u0000"}`,
	`[1.5, -2e+30, 12345678901234567890]`,
}

// oddRow is row i of n, in (create_time, id) order within testMonth:
// every combination of NULL and non-NULL over the 12 nullable columns
// (i mod 4096), odd strings and JSON, extreme integers, rows sharing a
// create_time, and the month's first and last microsecond.
func oddRow(i, n int) *Row {
	start, end := monthBounds(testMonth)
	span := end.Sub(start).Microseconds()
	var t time.Time
	switch {
	case i == n-1:
		t = end.Add(-time.Microsecond)
	default:
		// Pairs of rows share a create_time.
		t = start.Add(time.Duration(int64(i/2)*(span-1)/int64(n/2+1)) * time.Microsecond)
	}
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	r := &Row{CreateTime: t}
	// ids increase with i (for rows of one create_time), then random.
	binary.BigEndian.PutUint64(r.ID[:8], uint64(i))
	binary.BigEndian.PutUint64(r.ID[8:], rng.Uint64())
	binary.BigEndian.PutUint64(r.UserID[:8], rng.Uint64()%1000)
	binary.BigEndian.PutUint64(r.UserID[8:], 7)
	mask := i % 4096
	on := func(bit int) bool { return mask&(1<<bit) != 0 }
	text := func(k int) *string { return ptr(oddTexts[(i*7+k)%len(oddTexts)]) }
	if on(0) {
		r.PlatformAccountID = text(0)
	}
	r.OperationType = int16(1 + i%7)
	if on(1) {
		r.ResourceID = text(1)
	}
	r.Outcome = int16(1 + i%2)
	if on(2) {
		r.ErrorCode = ptr([]int32{0, -1, 1, 2147483647, -2147483648, 404}[i%6])
	}
	if on(3) {
		r.ErrorType = text(3)
	}
	if on(4) {
		r.ErrorMessage = text(4)
	}
	if on(5) {
		r.ExecutionTimeMs = ptr([]int64{0, 1, 9223372036854775807, 1234567}[i%4])
	}
	r.RetryCount = []int32{0, 1, 2147483647}[i%3]
	r.AuthTypeDetected = []int16{0, 3, 32767, -32768}[i%4]
	r.SessionRefreshed = i%3 == 0
	if on(6) {
		r.ProxyUsed = text(6)
	}
	if on(7) {
		r.UserAgent = text(7)
	}
	if on(8) {
		r.RequestPayload = []byte(oddJSON[(i*3)%len(oddJSON)])
	}
	if on(9) {
		r.ResponseSummary = []byte(oddJSON[(i*5+1)%len(oddJSON)])
	}
	if on(10) {
		r.TraceID = ptr(fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64()))
	}
	if on(11) {
		r.SpanID = text(11)
	}
	if i%1009 == 3 {
		// Long values, on a few rows.
		r.ErrorMessage = ptr(strings.Repeat("long-", 2000))
		r.ResponseSummary = []byte(`{"big": "` + strings.Repeat("x", 5000) + `"}`)
	}
	if i%4099 == 5 {
		// Non-NULL but empty payload (not valid JSON, but a byte string
		// must round-trip as it is, empty and not NULL).
		r.RequestPayload = []byte{}
	}
	return r
}

var (
	userAgents = []string{
		"platforma-worker/1.14.2 (linux; amd64)",
		"platforma-worker/1.14.1 (linux; arm64)",
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
	}
	proxies  = []string{"proxy-eu-1.internal:3128", "proxy-us-2.internal:3128", "proxy-ap-1.internal:3128"}
	accounts = func() []string {
		a := make([]string, 200)
		for i := range a {
			a[i] = fmt.Sprintf("acct-%06d", i*7919%1000000)
		}
		return a
	}()
	errTypes  = []string{"RATE_LIMITED", "AUTH_EXPIRED", "UPSTREAM_TIMEOUT", "VALIDATION"}
	resources = []string{"post", "comment", "profile", "media"}
)

// realisticRow is row i of a month's log as the service writes it: one
// row every ~10 ms, mostly successes, JSON payloads of a few hundred bytes.
func realisticRow(i int) *Row {
	start, _ := monthBounds(testMonth)
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	r := &Row{CreateTime: start.Add(time.Duration(i)*10*time.Millisecond + time.Duration(rng.IntN(9000))*time.Microsecond)}
	binary.BigEndian.PutUint64(r.ID[:8], rng.Uint64())
	binary.BigEndian.PutUint64(r.ID[8:], rng.Uint64())
	user := rng.IntN(5000)
	binary.BigEndian.PutUint64(r.UserID[:8], uint64(user)*0x9e3779b97f4a7c15)
	binary.BigEndian.PutUint64(r.UserID[8:], uint64(user))
	r.PlatformAccountID = &accounts[user%len(accounts)]
	r.OperationType = int16(1 + rng.IntN(7))
	r.ResourceID = ptr(fmt.Sprintf("%s/%d", resources[rng.IntN(len(resources))], rng.Int64N(1e12)))
	r.Outcome = 1
	r.ExecutionTimeMs = ptr(int64(20 + rng.IntN(3000)))
	if rng.IntN(20) == 0 {
		r.Outcome = 2
		r.ErrorCode = ptr(int32(400 + rng.IntN(200)))
		r.ErrorType = &errTypes[rng.IntN(len(errTypes))]
		r.ErrorMessage = ptr(fmt.Sprintf("upstream returned %d after %d ms: request %x rejected", *r.ErrorCode, *r.ExecutionTimeMs, rng.Uint64()))
		r.RetryCount = int32(rng.IntN(4))
	}
	r.AuthTypeDetected = int16(rng.IntN(3))
	r.SessionRefreshed = rng.IntN(10) == 0
	r.ProxyUsed = &proxies[rng.IntN(len(proxies))]
	r.UserAgent = &userAgents[rng.IntN(len(userAgents))]
	r.RequestPayload = fmt.Appendf(nil, `{"text": "post number %d with some words in it", "media_ids": [%d, %d], "visibility": "public", "scheduled": false}`, rng.IntN(1e6), rng.Int64N(1e12), rng.Int64N(1e12))
	r.ResponseSummary = fmt.Appendf(nil, `{"status": %d, "id": "%x", "latency_ms": %d}`, 200, rng.Uint64(), *r.ExecutionTimeMs)
	r.TraceID = ptr(fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64()))
	r.SpanID = ptr(fmt.Sprintf("%016x", rng.Uint64()))
	return r
}
