package control

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// DNS endpoints: the resolver of the mesh's names (package dns).
const (
	PathDNS      = "/v1/dns"       // DNSStatus
	PathDNSQuery = "/v1/dns/query" // ?name=NAME&type=A; DNSAnswer
)

func init() {
	routes[PathDNS] = route{http.MethodGet, accessRead, false, (*Server).serveDNS}
	routes[PathDNSQuery] = route{http.MethodGet, accessRead, false, (*Server).serveDNSQuery}
}

// DNSBackend is what a Backend that serves the mesh's names also
// implements (daemon does; a Backend without it answers the DNS endpoints
// with "unavailable"). Same concurrency and ownership rules as Backend.
type DNSBackend interface {
	// DNS returns the resolver's state and the names it serves.
	DNS(ctx context.Context) (*DNSStatus, error)
	// DNSQuery answers one query (qtype "A", "AAAA", "PTR", ...) the way
	// the resolver would, without forwarding. Wrap ErrInvalidRequest for
	// a bad name or type.
	DNSQuery(ctx context.Context, name, qtype string) (*DNSAnswer, error)
}

// DNSStatus is the document of GET /v1/dns.
type DNSStatus struct {
	SchemaVersion int `json:"schema_version"`
	// Enabled is dns.enabled (and a kernel TUN: the userspace stack has
	// no host address to listen on).
	Enabled bool `json:"enabled"`
	// Domain is the mesh domain (from the CA certificate).
	Domain string `json:"domain"`
	// Listen are the resolver's addresses (overlay address, port 53);
	// empty when it is not serving.
	Listen []netip.AddrPort `json:"listen,omitempty"`
	// Error says why the resolver is not serving, if it is not.
	Error string `json:"error,omitempty"`
	// Resolved says whether systemd-resolved routes the domain to meshd.
	Resolved ResolvedInfo `json:"resolved"`
	// Hint tells how to point the host's resolver at meshd when resolved
	// does not; "" when it does.
	Hint string `json:"hint,omitempty"`
	// Forward are the upstream resolvers for other names (dns.forward).
	Forward []netip.AddrPort `json:"forward,omitempty"`
	// Names are the names served, sorted.
	Names []DNSName `json:"names"`
	// Queries counts queries answered since start; NXDomain, Refused and
	// Forwarded count those outcomes.
	Queries   uint64 `json:"queries"`
	NXDomain  uint64 `json:"nxdomain"`
	Refused   uint64 `json:"refused"`
	Forwarded uint64 `json:"forwarded"`
}

// ResolvedInfo is the systemd-resolved registration.
type ResolvedInfo struct {
	// Enabled is dns.resolved.
	Enabled bool `json:"enabled"`
	// Configured is true while resolved routes the domain to meshd.
	Configured bool   `json:"configured"`
	Link       string `json:"link,omitempty"` // the TUN interface
	Error      string `json:"error,omitempty"`
}

// DNSSummary is the resolver in the node summary (Status.DNS).
type DNSSummary struct {
	Domain string           `json:"domain"`
	Listen []netip.AddrPort `json:"listen,omitempty"` // empty: not serving
	// ResolvedConfigured is true while systemd-resolved routes the domain
	// to meshd.
	ResolvedConfigured bool `json:"resolved_configured"`
	// Hint tells how to point the host's resolver at meshd when resolved
	// does not (DNSStatus.Hint), or why nothing is served; "" otherwise.
	Hint string `json:"hint,omitempty"`
}

// DNSName is one served name.
type DNSName struct {
	Node  string       `json:"node"`
	FQDN  string       `json:"fqdn"`
	Addrs []netip.Addr `json:"addrs"`
}

// DNSAnswer is the document of GET /v1/dns/query.
type DNSAnswer struct {
	SchemaVersion int    `json:"schema_version"`
	Name          string `json:"name"`
	Type          string `json:"type"`
	// Rcode is the response code: "NOERROR", "NXDOMAIN", "REFUSED", ...
	Rcode   string      `json:"rcode"`
	Answers []DNSRecord `json:"answers"`
}

// DNSRecord is one answer record.
type DNSRecord struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	TTL   uint32 `json:"ttl"`
	Value string `json:"value"`
}

// maxDNSNameLen bounds a queried name: DNS's own limit.
const maxDNSNameLen = 253

func (s *Server) dnsBackend(w http.ResponseWriter) DNSBackend {
	b, ok := s.opts.Backend.(DNSBackend)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "this meshd does not serve names")
	}
	return b
}

func (s *Server) serveDNS(w http.ResponseWriter, r *http.Request) {
	b := s.dnsBackend(w)
	if b == nil {
		return
	}
	st, err := b.DNS(r.Context())
	if err != nil {
		s.writeBackendError(w, r, err, "")
		return
	}
	if st == nil {
		writeError(w, http.StatusInternalServerError, codeInternal, "internal error: meshd returned no DNS status")
		return
	}
	st.SchemaVersion = SchemaVersion
	if st.Names == nil {
		st.Names = []DNSName{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) serveDNSQuery(w http.ResponseWriter, r *http.Request) {
	b := s.dnsBackend(w)
	if b == nil {
		return
	}
	name, qtype := r.URL.Query().Get("name"), strings.ToUpper(r.URL.Query().Get("type"))
	if name == "" || len(name) > maxDNSNameLen {
		writeError(w, http.StatusBadRequest, codeBadRequest, "name: want a DNS name of 1-253 bytes")
		return
	}
	if qtype == "" {
		qtype = "A"
	}
	if len(qtype) > 10 {
		writeError(w, http.StatusBadRequest, codeBadRequest, "type: not a DNS record type")
		return
	}
	a, err := b.DNSQuery(r.Context(), name, qtype)
	if err != nil {
		s.writeBackendError(w, r, err, "")
		return
	}
	if a == nil {
		writeError(w, http.StatusInternalServerError, codeInternal, "internal error: meshd returned no answer")
		return
	}
	a.SchemaVersion = SchemaVersion
	if a.Answers == nil {
		a.Answers = []DNSRecord{}
	}
	writeJSON(w, http.StatusOK, a)
}

// DNS returns the resolver's state and names.
func (c *Client) DNS(ctx context.Context) (*DNSStatus, error) {
	var st DNSStatus
	if err := c.getJSON(ctx, PathDNS, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// DNSQuery asks the node's resolver for name's records of type qtype ("A"
// when empty).
func (c *Client) DNSQuery(ctx context.Context, name, qtype string) (*DNSAnswer, error) {
	var a DNSAnswer
	q := url.Values{"name": {name}}
	if qtype != "" {
		q.Set("type", qtype)
	}
	if err := c.getJSON(ctx, PathDNSQuery+"?"+q.Encode(), &a); err != nil {
		return nil, err
	}
	return &a, nil
}
