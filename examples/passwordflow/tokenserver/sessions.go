package tokenserver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/jtiguard/jtiguard"
)

// The signed-in devices routes: each is the caller's own, by the subject
// of its verified access token; no route takes a subject from the request.
//
//	GET    /sessions                 the caller's live sessions, oldest first
//	                                 (?cursor= for the next page, ?limit=)
//	DELETE /sessions/{sid}           sign one out: 204 whether or not it existed
//	POST   /sessions/others/logout   sign out everywhere but this session
func (s *Server) sessionRoutes() {
	s.mux.Handle("GET /sessions", s.guard.Authenticate(http.HandlerFunc(s.listSessions)))
	s.mux.Handle("DELETE /sessions/{sid}", s.guard.Authenticate(http.HandlerFunc(s.endSession)))
	s.mux.Handle("POST /sessions/others/logout", s.guard.Authenticate(http.HandlerFunc(s.endOthers)))
}

// session is one entry of GET /sessions.
type session struct {
	SID       string    `json:"sid"`
	Device    string    `json:"device,omitempty"`
	IP        string    `json:"ip,omitempty"` // a prefix, never the address
	ClientID  string    `json:"client_id,omitempty"`
	ACR       string    `json:"acr,omitempty"`
	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed"`
	Expires   time.Time `json:"expires"` // unless refreshed before
	Current   bool      `json:"current"` // the session of the token that asked
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	c := claims(r)
	q := r.URL.Query()
	limit := 0 // the library's default page
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "limit must be a positive number"})
			return
		}
		limit = n
	}
	page, err := s.sessions.List(r.Context(), c.Subject, q.Get("cursor"), limit)
	switch {
	case errors.Is(err, jtiguard.ErrConfig) && q.Get("cursor") != "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "not a cursor of this list"})
		return
	case err != nil:
		s.guard.WriteError(w, err)
		return
	}
	out := struct {
		Sessions []session `json:"sessions"`
		Next     string    `json:"next,omitempty"` // ?cursor= of the next page
	}{Sessions: make([]session, 0, len(page.Sessions)), Next: page.Next}
	for _, ss := range page.Sessions {
		out.Sessions = append(out.Sessions, session{
			SID: ss.ID, Device: ss.Device.Label, IP: ss.Device.IP, ClientID: ss.ClientID, ACR: ss.ACR,
			Created: ss.Created.UTC(), Refreshed: ss.Refreshed.UTC(), Expires: ss.ExpiresAt.UTC(),
			Current: ss.ID == c.Session,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// endSession signs out one of the caller's sessions: 204 for any sid of the
// right shape, the caller's, another user's, ended or unknown, so that the
// answer tells no one whether another user's session exists (only the
// caller's own are ended). Ending the current session is a logout.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request) {
	err := s.sessions.EndSession(r.Context(), claims(r).Subject, r.PathValue("sid"))
	switch {
	case errors.Is(err, jtiguard.ErrInvalidJTI):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "not a session id"})
	case err != nil:
		s.guard.WriteError(w, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// endOthers signs out every session of the caller but the one of the token
// presented.
func (s *Server) endOthers(w http.ResponseWriter, r *http.Request) {
	tok, _ := s.guard.Token(r) // the guard already checked it, and its DPoP proof
	n, err := s.sessions.EndOthers(r.Context(), tok)
	if err != nil {
		s.guard.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "logged out", "sessions": n})
}

// What the server keeps of the device that logs in, its choice (the
// library keeps what it is given, and never fills it in): the name of the
// browser or program and the platform from the User-Agent, not the header
// itself, and the network the request came from, a /24 (IPv4) or /48
// (IPv6) prefix of the peer's address, not the address. Behind a proxy the
// peer is the proxy: a server there would take the client's address from
// the header its own proxy sets, never from one any client can send.
type deviceKey struct{}

// withDevice records the request's device for the password check, which
// hands it to Login.
func withDevice(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := jtiguard.Device{Label: deviceLabel(r.UserAgent()), IP: ipPrefix(r.RemoteAddr)}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), deviceKey{}, d)))
	})
}

func deviceFrom(ctx context.Context) jtiguard.Device {
	d, _ := ctx.Value(deviceKey{}).(jtiguard.Device)
	return d
}

// deviceLabel names the browser or program of a User-Agent and its
// platform, such as "Firefox on Linux" or "curl": the product, never the
// versions and details that make a header a fingerprint.
func deviceLabel(ua string) string {
	name := ""
	for _, b := range [...]struct{ token, name string }{
		{"Firefox/", "Firefox"}, {"Edg/", "Edge"}, {"OPR/", "Opera"}, {"Chrome/", "Chrome"}, {"Safari/", "Safari"},
	} {
		if strings.Contains(ua, b.token) {
			name = b.name
			break
		}
	}
	if name == "" {
		// The first product token, without its version: "curl/8.5.0" is
		// curl.
		product, _, _ := strings.Cut(strings.TrimSpace(ua), " ")
		product, _, _ = strings.Cut(product, "/")
		if len(product) > 40 || strings.ContainsFunc(product, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return ""
		}
		return product
	}
	for _, p := range [...]struct{ token, name string }{
		{"Android", "Android"}, {"iPhone", "iOS"}, {"iPad", "iPadOS"}, {"Windows", "Windows"},
		{"Mac OS X", "macOS"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"},
	} {
		if strings.Contains(ua, p.token) {
			return name + " on " + p.name
		}
	}
	return name
}

// ipPrefix is the network of a host:port peer address: its /24 (IPv4) or
// /48 (IPv6) prefix; "" if it is not an address.
func ipPrefix(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	a = a.Unmap().WithZone("")
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return ""
	}
	return p.String()
}
