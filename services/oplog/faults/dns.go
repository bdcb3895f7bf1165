//go:build faults

package faults

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is a tiny authoritative DNS server on UDP: what a headless Service's
// name is to its clients in Kubernetes, one A record per replica. The SDK
// and the relay reach the replicas through it, with gRPC's dns resolver
// pointed at it (dns://<server>/<name>:<port>), exactly as they would
// through cluster DNS. Every other question gets NXDOMAIN (gRPC also asks
// for a _grpc_config TXT record).
type DNS struct {
	conn    net.PacketConn
	mu      sync.Mutex
	records map[string][]net.IP // fully qualified, lower case, with the final dot
}

func newDNS(t *testing.T) *DNS {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{conn: conn, records: map[string][]net.IP{}}
	go d.serve()
	t.Cleanup(func() { _ = conn.Close() })
	return d
}

// Set makes name resolve to ips.
func (d *DNS) Set(name string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var list []net.IP
	for _, ip := range ips {
		list = append(list, net.ParseIP(ip).To4())
	}
	d.records[strings.ToLower(strings.TrimSuffix(name, "."))+"."] = list
}

// Target is the gRPC target of name:port resolved by this server.
func (d *DNS) Target(name string, port int) string {
	return "dns://" + d.conn.LocalAddr().String() + "/" + net.JoinHostPort(name, strconv.Itoa(port))
}

func (d *DNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if answer, ok := d.answer(buf[:n]); ok {
			_, _ = d.conn.WriteTo(answer, from)
		}
	}
}

func (d *DNS) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	d.mu.Lock()
	ips, known := d.records[strings.ToLower(q.Name.String())]
	d.mu.Unlock()
	rcode := dnsmessage.RCodeSuccess
	if !known {
		rcode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: rcode})
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	if known && q.Type == dnsmessage.TypeA { // AAAA: the name exists, without IPv6 addresses
		for _, ip := range ips {
			var a dnsmessage.AResource
			copy(a.A[:], ip)
			if b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, a) != nil {
				return nil, false
			}
		}
	}
	msg, err := b.Finish()
	return msg, err == nil
}
