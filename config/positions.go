package config

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// pos is a 1-based line and byte column in the configuration text.
type pos struct{ line, col int }

// positions maps a key path (as built by joinKey/indexKey) to where it is
// defined: the start of the key for key/value pairs and dotted-key tables,
// the '[' of a table header, the first byte of an array element.
type positions map[string]pos

// lookup returns the position of key, or of its nearest ancestor that has
// one (an implicit table, or a key the scanner could not place), or the zero
// pos.
func (p positions) lookup(key string) pos {
	for key != "" {
		if at, ok := p[key]; ok {
			return at
		}
		key = parentKey(key)
	}
	return pos{}
}

// parentKey strips the last segment or index from a key path.
func parentKey(key string) string {
	if strings.HasSuffix(key, "]") {
		if i := strings.LastIndexByte(key, '['); i >= 0 {
			return key[:i]
		}
	}
	// Walk back over the last segment, which may be quoted and contain dots.
	inQuote := false
	for i := len(key) - 1; i >= 0; i-- {
		switch key[i] {
		case '"':
			if i == 0 || key[i-1] != '\\' {
				inQuote = !inQuote
			}
		case '.':
			if !inQuote {
				return key[:i]
			}
		}
	}
	return ""
}

// joinKey appends one key segment to a path, quoting it the way TOML would
// when it is not a bare key.
func joinKey(parent, seg string) string {
	q := seg
	if !isBareKey(seg) {
		q = strconv.Quote(seg)
	}
	if parent == "" {
		return q
	}
	return parent + "." + q
}

// indexKey appends an array index to a path.
func indexKey(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareChar(s[i]) {
			return false
		}
	}
	return true
}

func isBareChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// scanPositions finds where every key, table and array element of src is
// defined. The TOML library keeps positions to itself (and only per key name,
// not per array element), so this is a small scanner of its own.
//
// It is meant for text the TOML library already accepted and does not
// validate anything; on other input it records what it can and never panics
// or loops (every step consumes at least one byte).
func scanPositions(src string) positions {
	s := &scanner{src: src, line: 1, out: positions{}, aot: map[string]int{}}
	s.document()
	return s.out
}

type scanner struct {
	src       string
	i         int // byte offset of the next unread byte
	line      int // line of src[i]
	lineStart int // offset of the first byte of that line
	out       positions
	// aot counts the entries of each array of tables seen so far, by
	// resolved path, so [[a.b]] knows its index and [a.b.c] its parent.
	aot map[string]int
}

func (s *scanner) eof() bool { return s.i >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.i]
}

func (s *scanner) peekAt(n int) byte {
	if s.i+n >= len(s.src) {
		return 0
	}
	return s.src[s.i+n]
}

func (s *scanner) advance() {
	if s.eof() {
		return
	}
	if s.src[s.i] == '\n' {
		s.line++
		s.lineStart = s.i + 1
	}
	s.i++
}

func (s *scanner) here() pos { return pos{line: s.line, col: s.i - s.lineStart + 1} }

func (s *scanner) record(key string, at pos) {
	if key == "" {
		return
	}
	if _, ok := s.out[key]; !ok {
		s.out[key] = at
	}
}

// skipSpace skips spaces and tabs (and carriage returns, which only occur
// before a newline in valid TOML).
func (s *scanner) skipSpace() {
	for !s.eof() {
		switch s.peek() {
		case ' ', '\t', '\r':
			s.advance()
		default:
			return
		}
	}
}

// skipBlank skips whitespace, newlines and comments.
func (s *scanner) skipBlank() {
	for !s.eof() {
		switch s.peek() {
		case ' ', '\t', '\r', '\n':
			s.advance()
		case '#':
			for !s.eof() && s.peek() != '\n' {
				s.advance()
			}
		default:
			return
		}
	}
}

func (s *scanner) document() {
	table := ""
	for {
		s.skipBlank()
		if s.eof() {
			return
		}
		start := s.i
		if s.peek() == '[' {
			table = s.header()
		} else {
			s.keyValue(table)
		}
		if s.i == start {
			s.advance() // not TOML; never stall
		}
	}
}

// header reads "[a.b]" or "[[a.b]]" and returns the resolved path of the
// table it opens.
func (s *scanner) header() string {
	at := s.here()
	s.advance()
	array := s.peek() == '['
	if array {
		s.advance()
	}
	s.skipSpace()
	segs := s.keySegments()
	path := ""
	for n, seg := range segs {
		path = joinKey(path, seg)
		last := n == len(segs)-1
		if last && array {
			idx := s.aot[path]
			s.aot[path] = idx + 1
			s.record(path, at)
			path = indexKey(path, idx)
		} else if cnt := s.aot[path]; cnt > 0 {
			path = indexKey(path, cnt-1)
		}
		s.record(path, at)
	}
	s.skipSpace()
	if s.peek() == ']' {
		s.advance()
		if array && s.peek() == ']' {
			s.advance()
		}
	}
	return path
}

// keyValue reads "key = value" inside table.
func (s *scanner) keyValue(table string) {
	at := s.here()
	segs := s.keySegments()
	if len(segs) == 0 {
		return
	}
	path := table
	for _, seg := range segs {
		path = joinKey(path, seg)
		s.record(path, at)
	}
	s.skipSpace()
	if s.peek() != '=' {
		return
	}
	s.advance()
	s.skipSpace()
	s.value(path)
}

// keySegments reads a possibly dotted, possibly quoted key.
func (s *scanner) keySegments() []string {
	var segs []string
	for !s.eof() {
		start := s.i
		var seg string
		switch c := s.peek(); {
		case c == '"':
			seg = s.basicString()
		case c == '\'':
			seg = s.literalString()
		case isBareChar(c):
			for !s.eof() && isBareChar(s.peek()) {
				s.advance()
			}
			seg = s.src[start:s.i]
		default:
			return segs
		}
		segs = append(segs, seg)
		s.skipSpace()
		if s.peek() != '.' {
			return segs
		}
		s.advance()
		s.skipSpace()
	}
	return segs
}

// value skims one value, recording the positions of array elements and of
// inline-table keys under path.
func (s *scanner) value(path string) {
	switch c := s.peek(); c {
	case '"':
		if s.peekAt(1) == '"' && s.peekAt(2) == '"' {
			s.multiline('"')
		} else {
			s.basicString()
		}
	case '\'':
		if s.peekAt(1) == '\'' && s.peekAt(2) == '\'' {
			s.multiline('\'')
		} else {
			s.literalString()
		}
	case '[':
		s.array(path)
	case '{':
		s.inlineTable(path)
	default:
		// Numbers, booleans and date-times (which may hold one space) end at
		// a delimiter; the caller skips what follows.
		for !s.eof() {
			switch s.peek() {
			case ',', ']', '}', '\n', '\r', '#':
				return
			}
			s.advance()
		}
	}
}

func (s *scanner) array(path string) {
	s.advance() // [
	for n := 0; ; n++ {
		s.skipBlank()
		if s.eof() {
			return
		}
		if s.peek() == ']' {
			s.advance()
			return
		}
		start := s.i
		elem := indexKey(path, n)
		s.record(elem, s.here())
		s.value(elem)
		s.skipBlank()
		if s.peek() == ',' {
			s.advance()
		} else if s.i == start {
			s.advance() // not TOML; never stall
		}
	}
}

func (s *scanner) inlineTable(path string) {
	s.advance() // {
	for {
		s.skipBlank()
		if s.eof() {
			return
		}
		if s.peek() == '}' {
			s.advance()
			return
		}
		start := s.i
		s.keyValue(path)
		s.skipBlank()
		if s.peek() == ',' {
			s.advance()
		} else if s.i == start {
			s.advance()
		}
	}
}

// basicString reads a "..." string and returns its unescaped contents.
func (s *scanner) basicString() string {
	s.advance() // "
	var b strings.Builder
	for !s.eof() {
		c := s.peek()
		switch c {
		case '"':
			s.advance()
			return b.String()
		case '\n':
			return b.String() // unterminated: not TOML
		case '\\':
			s.advance()
			s.escape(&b)
		default:
			b.WriteByte(c)
			s.advance()
		}
	}
	return b.String()
}

// escape decodes the escape sequence after a backslash (TOML 1.1: \b \t \n
// \f \r \e \" \\ \xHH \uHHHH \UHHHHHHHH).
func (s *scanner) escape(b *strings.Builder) {
	c := s.peek()
	s.advance()
	hex := 0
	switch c {
	case 'b':
		b.WriteByte('\b')
	case 't':
		b.WriteByte('\t')
	case 'n':
		b.WriteByte('\n')
	case 'f':
		b.WriteByte('\f')
	case 'r':
		b.WriteByte('\r')
	case 'e':
		b.WriteByte(0x1b)
	case 'x':
		hex = 2
	case 'u':
		hex = 4
	case 'U':
		hex = 8
	default:
		b.WriteByte(c) // \" and \\ (and anything else, verbatim)
	}
	if hex == 0 {
		return
	}
	end := s.i + hex
	if end > len(s.src) {
		end = len(s.src)
	}
	digits := s.src[s.i:end]
	for s.i < end && s.src[s.i] != '"' && s.src[s.i] != '\n' {
		s.advance()
	}
	v, err := strconv.ParseUint(digits, 16, 32)
	if err != nil || !utf8.ValidRune(rune(v)) {
		b.WriteRune(utf8.RuneError)
		return
	}
	b.WriteRune(rune(v))
}

// literalString reads a '...' string.
func (s *scanner) literalString() string {
	s.advance() // '
	start := s.i
	for !s.eof() && s.peek() != '\'' && s.peek() != '\n' {
		s.advance()
	}
	v := s.src[start:s.i]
	if s.peek() == '\'' {
		s.advance()
	}
	return v
}

// multiline skips a multi-line basic or literal string (three quote
// characters q on each side). The closing delimiter may be followed by up to
// two more quotes that belong to the contents.
func (s *scanner) multiline(q byte) {
	s.advance()
	s.advance()
	s.advance()
	for !s.eof() {
		c := s.peek()
		if q == '"' && c == '\\' {
			s.advance()
			s.advance()
			continue
		}
		if c == q && s.peekAt(1) == q && s.peekAt(2) == q {
			for n := 0; n < 5 && s.peek() == q; n++ {
				s.advance()
			}
			return
		}
		s.advance()
	}
}
