package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
)

// errRESP reports bytes that are not a RESP value (or one too large or too
// deep for a test proxy).
var errRESP = errors.New("redistest: malformed RESP")

const (
	maxRESPLine  = 64 << 20 // longest simple line (inline command, simple string)
	maxRESPBulk  = 1 << 30  // longest bulk string
	maxRESPDepth = 64       // deepest nesting of aggregates
)

// respReader reads whole RESP2/RESP3 values and keeps their exact bytes, so a
// proxy can forward a value unchanged once it has decided what to do with it.
// Streamed strings and aggregates (RESP3 "?" lengths) are not supported:
// Redis does not send them.
type respReader struct {
	r   *bufio.Reader
	buf []byte
}

// frame reads one complete value (including any RESP3 attribute before it).
// With inline true a line that does not start with a RESP type byte is an
// inline command, as a server accepts from clients. The returned bytes are
// valid until the next call.
func (rr *respReader) frame(inline bool) ([]byte, error) {
	rr.buf = rr.buf[:0]
	if err := rr.value(0, inline); err != nil {
		if err == io.EOF && len(rr.buf) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return rr.buf, nil
}

// line appends the next line, through its '\n', to rr.buf and returns it
// without the line ending ("\r\n", or a lone "\n" as inline commands allow).
func (rr *respReader) line() ([]byte, error) {
	start := len(rr.buf)
	for {
		chunk, err := rr.r.ReadSlice('\n')
		rr.buf = append(rr.buf, chunk...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF && len(rr.buf) > start {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(rr.buf)-start > maxRESPLine {
			return nil, errRESP
		}
	}
	l := rr.buf[start : len(rr.buf)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}

func respLen(b []byte) (int, error) {
	n, err := strconv.Atoi(string(b))
	if err != nil || n < -1 {
		return 0, errRESP
	}
	return n, nil
}

func (rr *respReader) value(depth int, inline bool) error {
	if depth > maxRESPDepth {
		return errRESP
	}
	l, err := rr.line()
	if err != nil {
		return err
	}
	if len(l) == 0 {
		if inline {
			return nil // an empty inline line: the server ignores it
		}
		return errRESP
	}
	switch l[0] {
	case '+', '-', ':', '_', '#', ',', '(':
		return nil
	case '$', '!', '=': // bulk string, blob error, verbatim string
		n, err := respLen(l[1:])
		if err != nil || n < 0 {
			return err
		}
		if n > maxRESPBulk {
			return errRESP
		}
		old := len(rr.buf)
		rr.buf = slices.Grow(rr.buf, n+2)[:old+n+2]
		if _, err := io.ReadFull(rr.r, rr.buf[old:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		return nil
	case '*', '~', '>', '%', '|': // array, set, push, map, attribute
		n, err := respLen(l[1:])
		if err != nil || n < 0 {
			return err
		}
		if l[0] == '%' || l[0] == '|' {
			n *= 2
		}
		attr := l[0] == '|'
		for range n {
			if err := rr.value(depth+1, false); err != nil {
				return err
			}
		}
		if attr { // an attribute annotates the value that follows it
			return rr.value(depth, inline)
		}
		return nil
	default:
		if inline && depth == 0 {
			return nil
		}
		return errRESP
	}
}

// requestArgs returns the number of arguments of a request frame (a RESP
// array of bulk strings, or an inline command) and its first two arguments,
// upper-cased (fewer if it has fewer).
func requestArgs(f []byte) (n int, head []string) {
	if len(f) == 0 {
		return 0, nil
	}
	if f[0] != '*' {
		fields := strings.Fields(string(f))
		for i := 0; i < len(fields) && i < 2; i++ {
			head = append(head, strings.ToUpper(fields[i]))
		}
		return len(fields), head
	}
	i := bytes.IndexByte(f, '\n')
	if i < 0 {
		return 0, nil
	}
	n, err := respLen(bytes.TrimSuffix(f[1:i], []byte("\r")))
	if err != nil || n <= 0 {
		return 0, nil
	}
	pos := i + 1
	for k := 0; k < n && k < 2 && pos < len(f) && f[pos] == '$'; k++ {
		j := bytes.IndexByte(f[pos:], '\n')
		if j < 0 {
			break
		}
		j += pos
		l, err := respLen(bytes.TrimSuffix(f[pos+1:j], []byte("\r")))
		if err != nil || l < 0 || j+1+l > len(f) {
			break
		}
		head = append(head, strings.ToUpper(string(f[j+1:j+1+l])))
		pos = j + 1 + l + 2
	}
	return n, head
}
