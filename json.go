package jtiguard

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// A strict reader and writer for the flat JSON objects of JOSE headers and
// JWT claims. encoding/json is lenient where a token verifier must not be: it
// keeps the last of two duplicate names, matches names case-insensitively,
// accepts strings for numbers through tags, and replaces invalid UTF-8. This
// reader rejects all of those, and reads the registered claims without
// reflection.

var errJSON = errors.New("jtiguard: malformed JSON")

// maxJSONDepth bounds nesting inside custom claim values.
const maxJSONDepth = 32

type jsonReader struct {
	s     string
	i     int
	first bool
}

func (r *jsonReader) ws() {
	for r.i < len(r.s) {
		switch r.s[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

func (r *jsonReader) peek() byte {
	if r.i < len(r.s) {
		return r.s[r.i]
	}
	return 0
}

// open consumes the '{' that starts the top-level object.
func (r *jsonReader) open() error {
	r.ws()
	if r.peek() != '{' {
		return errJSON
	}
	r.i++
	r.first = true
	return nil
}

// next returns the next member name, positioned at its value, or ok=false
// after the closing '}'.
func (r *jsonReader) next() (name string, ok bool, err error) {
	r.ws()
	switch c := r.peek(); {
	case c == '}':
		r.i++
		return "", false, nil
	case r.first:
		r.first = false
	case c == ',':
		r.i++
		r.ws()
	default:
		return "", false, errJSON
	}
	if name, err = r.str(); err != nil {
		return "", false, err
	}
	r.ws()
	if r.peek() != ':' {
		return "", false, errJSON
	}
	r.i++
	r.ws()
	return name, true, nil
}

// end checks that nothing but white space follows the top-level object.
func (r *jsonReader) end() error {
	r.ws()
	if r.i != len(r.s) {
		return errJSON
	}
	return nil
}

// str reads a string. Strings without escapes are returned as substrings of
// the input (no allocation).
func (r *jsonReader) str() (string, error) {
	if r.peek() != '"' {
		return "", errJSON
	}
	r.i++
	start := r.i
	ascii := true
	for r.i < len(r.s) {
		c := r.s[r.i]
		switch {
		case c == '"':
			v := r.s[start:r.i]
			r.i++
			if !ascii && !utf8.ValidString(v) {
				return "", errJSON
			}
			return v, nil
		case c == '\\':
			return r.escaped(start)
		case c < 0x20:
			return "", errJSON
		case c >= utf8.RuneSelf:
			ascii = false
		}
		r.i++
	}
	return "", errJSON
}

// escaped finishes a string that contains escapes, from its start.
func (r *jsonReader) escaped(start int) (string, error) {
	var b strings.Builder
	b.WriteString(r.s[start:r.i])
	for r.i < len(r.s) {
		c := r.s[r.i]
		switch {
		case c == '"':
			r.i++
			v := b.String()
			if !utf8.ValidString(v) {
				return "", errJSON
			}
			return v, nil
		case c < 0x20:
			return "", errJSON
		case c != '\\':
			b.WriteByte(c)
			r.i++
			continue
		}
		if r.i+1 >= len(r.s) {
			return "", errJSON
		}
		e := r.s[r.i+1]
		r.i += 2
		switch e {
		case '"', '\\', '/':
			b.WriteByte(e)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			u, ok := r.hex4()
			if !ok {
				return "", errJSON
			}
			if utf16.IsSurrogate(u) {
				// A surrogate must be the first half of a pair; lone halves
				// are not valid Unicode and are refused, not replaced.
				if r.i+1 >= len(r.s) || r.s[r.i] != '\\' || r.s[r.i+1] != 'u' {
					return "", errJSON
				}
				r.i += 2
				u2, ok := r.hex4()
				if !ok {
					return "", errJSON
				}
				u = utf16.DecodeRune(u, u2)
				if u == utf8.RuneError {
					return "", errJSON
				}
			}
			b.WriteRune(u)
		default:
			return "", errJSON
		}
	}
	return "", errJSON
}

func (r *jsonReader) hex4() (rune, bool) {
	if r.i+4 > len(r.s) {
		return 0, false
	}
	var u rune
	for _, c := range []byte(r.s[r.i : r.i+4]) {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		u = u<<4 | rune(c)
	}
	r.i += 4
	return u, true
}

// maxIntDigits keeps integer claims far below int64 overflow; 10^15 seconds
// is beyond year 30 million, and the lifetime checks reject far less.
const maxIntDigits = 15

// uint reads a non-negative integer without fraction or exponent: the form
// this package writes NumericDate values and counters in. A string, a
// float, a negative number or null is refused.
func (r *jsonReader) uint() (int64, error) {
	start := r.i
	var v int64
	for r.i < len(r.s) && '0' <= r.s[r.i] && r.s[r.i] <= '9' {
		v = v*10 + int64(r.s[r.i]-'0')
		r.i++
	}
	n := r.i - start
	if n == 0 || n > maxIntDigits || (n > 1 && r.s[start] == '0') {
		return 0, errJSON
	}
	switch r.peek() {
	case '.', 'e', 'E':
		return 0, errJSON
	}
	return v, nil
}

// strs reads an array of strings.
func (r *jsonReader) strs() ([]string, error) {
	return r.array(r.str)
}

// array reads a JSON array whose elements elem reads, each returned as a
// string.
func (r *jsonReader) array(elem func() (string, error)) ([]string, error) {
	if r.peek() != '[' {
		return nil, errJSON
	}
	r.i++
	r.ws()
	out := []string{}
	if r.peek() == ']' {
		r.i++
		return out, nil
	}
	for {
		r.ws()
		v, err := elem()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		r.ws()
		switch r.peek() {
		case ',':
			r.i++
		case ']':
			r.i++
			return out, nil
		default:
			return nil, errJSON
		}
	}
}

// strOrStrs reads a string or an array of strings (the aud claim).
func (r *jsonReader) strOrStrs() ([]string, error) {
	if r.peek() == '"' {
		v, err := r.str()
		if err != nil {
			return nil, err
		}
		return []string{v}, nil
	}
	return r.strs()
}

// raw validates any JSON value and returns its text.
func (r *jsonReader) raw() (string, error) {
	start := r.i
	if err := r.skip(0); err != nil {
		return "", err
	}
	return r.s[start:r.i], nil
}

func (r *jsonReader) skip(depth int) error {
	if depth > maxJSONDepth {
		return errJSON
	}
	switch c := r.peek(); {
	case c == '"':
		_, err := r.str()
		return err
	case c == '{':
		r.i++
		r.ws()
		if r.peek() == '}' {
			r.i++
			return nil
		}
		for {
			r.ws()
			if _, err := r.str(); err != nil {
				return err
			}
			r.ws()
			if r.peek() != ':' {
				return errJSON
			}
			r.i++
			r.ws()
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			r.ws()
			switch r.peek() {
			case ',':
				r.i++
			case '}':
				r.i++
				return nil
			default:
				return errJSON
			}
		}
	case c == '[':
		r.i++
		r.ws()
		if r.peek() == ']' {
			r.i++
			return nil
		}
		for {
			r.ws()
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			r.ws()
			switch r.peek() {
			case ',':
				r.i++
			case ']':
				r.i++
				return nil
			default:
				return errJSON
			}
		}
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		return r.number()
	}
	return errJSON
}

func (r *jsonReader) literal(lit string) error {
	if !strings.HasPrefix(r.s[r.i:], lit) {
		return errJSON
	}
	r.i += len(lit)
	return nil
}

// number validates a JSON number (RFC 8259 section 6).
func (r *jsonReader) number() error {
	if r.peek() == '-' {
		r.i++
	}
	switch c := r.peek(); {
	case c == '0':
		r.i++
	case '1' <= c && c <= '9':
		r.digits()
	default:
		return errJSON
	}
	if r.peek() == '.' {
		r.i++
		if r.digits() == 0 {
			return errJSON
		}
	}
	if c := r.peek(); c == 'e' || c == 'E' {
		r.i++
		if c := r.peek(); c == '+' || c == '-' {
			r.i++
		}
		if r.digits() == 0 {
			return errJSON
		}
	}
	return nil
}

func (r *jsonReader) digits() int {
	start := r.i
	for r.i < len(r.s) && '0' <= r.s[r.i] && r.s[r.i] <= '9' {
		r.i++
	}
	return r.i - start
}

// jsonWriter builds a JSON object by appending members in a fixed order.
type jsonWriter struct {
	b     []byte
	count int
}

func (w *jsonWriter) name(n string) {
	if w.count == 0 {
		w.b = append(w.b, '{')
	} else {
		w.b = append(w.b, ',')
	}
	w.count++
	w.b = appendJSONString(w.b, n)
	w.b = append(w.b, ':')
}

func (w *jsonWriter) str(n, v string) {
	w.name(n)
	w.b = appendJSONString(w.b, v)
}

func (w *jsonWriter) int(n string, v int64) {
	w.name(n)
	w.b = strconv.AppendInt(w.b, v, 10)
}

func (w *jsonWriter) strs(n string, vs []string) {
	w.name(n)
	w.b = append(w.b, '[')
	for i, v := range vs {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = appendJSONString(w.b, v)
	}
	w.b = append(w.b, ']')
}

func (w *jsonWriter) raw(n, v string) {
	w.name(n)
	w.b = append(w.b, v...)
}

func (w *jsonWriter) close() []byte {
	if w.count == 0 {
		w.b = append(w.b, '{')
	}
	return append(w.b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. The caller has checked that s
// is valid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
