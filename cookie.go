package jtiguard

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"time"
)

// CookieConfig carries tokens in cookies for browser clients, where
// JavaScript must never see them: HttpOnly, Secure and SameSite cookies, the
// refresh token's cookie sent only to the refresh path, and a double-submit
// CSRF check on every unsafe request a Guard authenticates by cookie. The
// zero value is the safe default.
type CookieConfig struct {
	// AccessName is the access token cookie: default "__Host-access" (the
	// __Host- prefix makes browsers refuse it unless Secure, Path=/ and
	// without Domain).
	AccessName string
	// RefreshName is the refresh token cookie: default "__Secure-refresh".
	RefreshName string
	// RefreshPath is the only path the refresh cookie is sent to: default
	// "/token".
	RefreshPath string
	// CSRFName is both the CSRF cookie (readable by the page's script) and
	// the header the page must echo it in on unsafe requests: default
	// "__Host-csrf" and "X-CSRF-Token".
	CSRFName   string
	CSRFHeader string
	// SameSite defaults to Strict; Lax if top-level navigations from other
	// sites must arrive logged in.
	SameSite http.SameSite
	// Insecure drops Secure and the __Host-/__Secure- prefixes, for plain
	// HTTP on localhost during development only.
	Insecure bool
}

func (c CookieConfig) withDefaults() CookieConfig {
	pick := func(v *string, secure, plain string) {
		if *v == "" {
			*v = secure
			if c.Insecure {
				*v = plain
			}
		}
	}
	pick(&c.AccessName, "__Host-access", "access")
	pick(&c.RefreshName, "__Secure-refresh", "refresh")
	pick(&c.CSRFName, "__Host-csrf", "csrf")
	if c.RefreshPath == "" {
		c.RefreshPath = "/token"
	}
	if c.CSRFHeader == "" {
		c.CSRFHeader = "X-CSRF-Token"
	}
	if c.SameSite == 0 || c.SameSite == http.SameSiteDefaultMode {
		c.SameSite = http.SameSiteStrictMode
	}
	return c
}

func (c CookieConfig) cookie(name, value, path string, until time.Time, httpOnly bool) *http.Cookie {
	maxAge := int(time.Until(until) / time.Second)
	if value == "" {
		maxAge = -1
	}
	return &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: httpOnly, Secure: !c.Insecure, SameSite: c.SameSite}
}

// Set writes the pair's cookies and a fresh CSRF token, each living as long
// as its token.
func (c CookieConfig) Set(w http.ResponseWriter, pair *TokenPair) error {
	c = c.withDefaults()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	http.SetCookie(w, c.cookie(c.AccessName, pair.AccessToken, "/", pair.Access.ExpiresAt, true))
	http.SetCookie(w, c.cookie(c.RefreshName, pair.RefreshToken, c.RefreshPath, pair.Refresh.ExpiresAt, true))
	http.SetCookie(w, c.cookie(c.CSRFName, base64.RawURLEncoding.EncodeToString(b[:]), "/", pair.Refresh.ExpiresAt, false))
	return nil
}

// Clear deletes the cookies (at logout).
func (c CookieConfig) Clear(w http.ResponseWriter) {
	c = c.withDefaults()
	http.SetCookie(w, c.cookie(c.AccessName, "", "/", time.Time{}, true))
	http.SetCookie(w, c.cookie(c.RefreshName, "", c.RefreshPath, time.Time{}, true))
	http.SetCookie(w, c.cookie(c.CSRFName, "", "/", time.Time{}, false))
}

// RefreshToken returns the refresh token cookie of r, after the CSRF check
// that every cookie-authenticated unsafe request needs; "" and an *Error
// when it fails.
func (c CookieConfig) RefreshToken(r *http.Request) (string, error) {
	c = c.withDefaults()
	if err := c.checkCSRF(r); err != nil {
		return "", err
	}
	ck, err := r.Cookie(c.RefreshName)
	if err != nil {
		return "", nil
	}
	return ck.Value, nil
}

// accessToken returns the access token cookie, checking CSRF for unsafe
// methods.
func (c CookieConfig) accessToken(r *http.Request) (string, error) {
	ck, err := r.Cookie(c.AccessName)
	if err != nil || ck.Value == "" {
		return "", nil
	}
	if err := c.checkCSRF(r); err != nil {
		return "", err
	}
	return ck.Value, nil
}

var errCSRF = &Error{Status: http.StatusForbidden, Code: "invalid_request", Description: "CSRF check failed", kind: ErrInvalidRequest}

// checkCSRF is the double-submit check: on unsafe methods the header must
// repeat the CSRF cookie, which another site can neither read nor set.
func (c CookieConfig) checkCSRF(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	ck, err := r.Cookie(c.CSRFName)
	h := r.Header.Get(c.CSRFHeader)
	if err != nil || ck.Value == "" || h == "" || !SecretsEqual(ck.Value, h) {
		return errCSRF
	}
	return nil
}
