package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestRESPReaderFrames(t *testing.T) {
	replies := []string{
		"+OK\r\n",
		"-ERR wrong\r\n",
		":42\r\n",
		"$5\r\nhello\r\n",
		"$0\r\n\r\n",
		"$-1\r\n",
		"$4\r\na\r\nb\r\n", // a bulk string holding CRLF
		"*-1\r\n",
		"*0\r\n",
		"*3\r\n:1\r\n*2\r\n$1\r\na\r\n+b\r\n$-1\r\n",
		"%2\r\n+server\r\n$5\r\nredis\r\n+proto\r\n:3\r\n", // RESP3 map
		"~2\r\n:1\r\n:2\r\n",
		"_\r\n",
		"#t\r\n",
		",3.14\r\n",
		"(3492890328409238509324850943850943825024385\r\n",
		"!11\r\nSYNTAX oops\r\n",
		"=15\r\ntxt:Some string\r\n",
		"|1\r\n+ttl\r\n:3600\r\n*1\r\n+after-attribute\r\n", // an attribute, then its value
		">3\r\n+message\r\n+ch\r\n$2\r\nhi\r\n",
	}
	in := strings.Join(replies, "")
	for _, name := range []string{"whole", "one byte at a time"} {
		var r io.Reader = strings.NewReader(in)
		if name != "whole" {
			r = iotest.OneByteReader(r)
		}
		rr := &respReader{r: bufio.NewReaderSize(r, 16)} // small buffer: lines longer than it
		for i, want := range replies {
			got, err := rr.frame(false)
			if err != nil {
				t.Fatalf("%s: frame %d: %v", name, i, err)
			}
			if string(got) != want {
				t.Fatalf("%s: frame %d = %q, want %q", name, i, got, want)
			}
		}
		if _, err := rr.frame(false); err != io.EOF {
			t.Fatalf("%s: after the last frame: %v, want EOF", name, err)
		}
	}
}

func TestRESPReaderErrors(t *testing.T) {
	for _, in := range []string{"?what\r\n", "$x\r\n", "*-2\r\n", "$5\r\nab", "*2\r\n:1\r\n", "+no end"} {
		rr := &respReader{r: bufio.NewReader(strings.NewReader(in))}
		if _, err := rr.frame(false); !errors.Is(err, errRESP) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: err %v, want a malformed or unexpected-EOF error", in, err)
		}
	}
}

func TestRequestArgs(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		head []string
	}{
		{"*3\r\n$7\r\nevalsha\r\n$40\r\n" + strings.Repeat("a", 40) + "\r\n$1\r\n0\r\n", 3, []string{"EVALSHA", strings.Repeat("A", 40)}},
		{"*1\r\n$4\r\nPING\r\n", 1, []string{"PING"}},
		{"*2\r\n$6\r\nclient\r\n$5\r\nreply\r\n", 2, []string{"CLIENT", "REPLY"}},
		{"PING\r\n", 1, []string{"PING"}},
		{"set k  v\n", 3, []string{"SET", "K"}},
		{"\r\n", 0, nil},
		{"*0\r\n", 0, nil},
	} {
		// Each request must also read as one frame.
		rr := &respReader{r: bufio.NewReader(strings.NewReader(c.in))}
		f, err := rr.frame(true)
		if err != nil || !bytes.Equal(f, []byte(c.in)) {
			t.Errorf("frame(%q) = %q, %v", c.in, f, err)
		}
		n, head := requestArgs(f)
		if n != c.n || !slices.Equal(head, c.head) {
			t.Errorf("requestArgs(%q) = %d %q, want %d %q", c.in, n, head, c.n, c.head)
		}
	}
}
