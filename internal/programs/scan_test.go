package programs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The scanner finds every program the module's Go code runs by name,
// whatever its build tags, without running anything.
//
// It starts from os/exec's Command (program in argument 0) and
// CommandContext (argument 1) and finds, to a fixed point, the functions
// that pass one of their parameters on as a program: the lab's
// Namespace.Run(ctx, name, ...), run(argv...), StartWith(opts, name, ...)
// and so on become wrappers with the position of their program. Then it
// reads the program at every call of every wrapper. "ip netns exec NS prog"
// runs prog, so the scanner looks through it. Functions are matched by
// name, not type: a call of another function with the same name that puts
// a string literal where the wrapper has its program is checked too, which
// errs on the safe side.

// spec is where a wrapper takes its program: argument arg, either the
// program itself or (slice) a []string whose element 0 is the program.
type spec struct {
	arg      int
	slice    bool
	variadic bool // the slice is a ...string parameter: calls may list its elements
}

// item is one element of an argument list: an expression, or a spread
// slice (xs...).
type item struct {
	e      ast.Expr
	spread bool
}

// use is one program run by name, found at pos.
type use struct {
	name string
	pos  token.Position
	file string // module-relative path
}

// fn is a function (declaration or literal assigned to a name) whose body
// the scanner reads.
type fn struct {
	name    string
	params  []*ast.Ident // in order; a variadic one is last
	typs    []ast.Expr
	body    *ast.BlockStmt
	file    string
	method  bool
	returns []ast.Expr // the first result of each return statement
}

// keys are the names calls reach f by: a plain call (run(...)) reaches a
// function or closure of the same directory, a selector call (n.run(...),
// lab.Build(...)) a method or another package's function.
func (f fn) keys() []string {
	if f.method {
		return []string{"s:" + f.name}
	}
	keys := []string{"f:" + path.Dir(f.file) + "." + f.name}
	if ast.IsExported(f.name) {
		keys = append(keys, "s:"+f.name)
	}
	return keys
}

type scanner struct {
	fset     *token.FileSet
	funcs    map[string][]fn   // by name, for the slices a function returns
	wrappers map[string][]spec // by function name; "exec.Command" for os/exec
	uses     []use
	problems []string
	dynamic  []string // program expressions that are neither literal nor parameter
}

func newScanner() *scanner {
	return &scanner{
		fset:  token.NewFileSet(),
		funcs: map[string][]fn{},
		wrappers: map[string][]spec{
			"exec.Command":        {{arg: 0}},
			"exec.CommandContext": {{arg: 1}},
		},
	}
}

// callName is the key a call in file is looked up by (see fn.keys).
func callName(c *ast.CallExpr, file string) string {
	switch f := c.Fun.(type) {
	case *ast.Ident:
		return "f:" + path.Dir(file) + "." + f.Name
	case *ast.SelectorExpr:
		if x, ok := f.X.(*ast.Ident); ok && x.Name == "exec" {
			return "exec." + f.Sel.Name
		}
		return "s:" + f.Sel.Name
	}
	return ""
}

// funcs lists the functions of a file: declarations, and function literals
// assigned to a name (run := func(name string, ...)).
func funcs(f *ast.File, rel string) []fn {
	var out []fn
	mk := func(name string, t *ast.FuncType, body *ast.BlockStmt, method bool) fn {
		x := fn{name: name, body: body, file: rel, method: method}
		for _, p := range t.Params.List {
			for _, n := range p.Names {
				x.params = append(x.params, n)
				x.typs = append(x.typs, p.Type)
			}
		}
		ast.Inspect(body, func(n ast.Node) bool {
			switch r := n.(type) {
			case *ast.FuncLit:
				return false // its returns are its own
			case *ast.ReturnStmt:
				if len(r.Results) > 0 {
					x.returns = append(x.returns, r.Results[0])
				}
			}
			return true
		})
		return x
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch d := n.(type) {
		case *ast.FuncDecl:
			if d.Body != nil {
				out = append(out, mk(d.Name.Name, d.Type, d.Body, d.Recv != nil))
			}
		case *ast.AssignStmt:
			for i, r := range d.Rhs {
				if lit, ok := r.(*ast.FuncLit); ok && i < len(d.Lhs) {
					if id, ok := d.Lhs[i].(*ast.Ident); ok {
						out = append(out, mk(id.Name, lit.Type, lit.Body, false))
					}
				}
			}
		}
		return true
	})
	return out
}

// ctx is one function being read: its parameters and the definitions of its
// local variables.
type ctx struct {
	s    *scanner
	f    fn
	defs map[string][]ast.Expr
}

func newCtx(s *scanner, f fn) *ctx {
	c := &ctx{s: s, f: f, defs: map[string][]ast.Expr{}}
	ast.Inspect(f.body, func(n ast.Node) bool {
		switch d := n.(type) {
		case *ast.AssignStmt:
			switch {
			case len(d.Lhs) == len(d.Rhs):
				for i, l := range d.Lhs {
					if id, ok := l.(*ast.Ident); ok {
						c.defs[id.Name] = append(c.defs[id.Name], d.Rhs[i])
					}
				}
			case len(d.Rhs) == 1:
				// bin, err := exec.LookPath("go"): the first result.
				if id, ok := d.Lhs[0].(*ast.Ident); ok {
					c.defs[id.Name] = append(c.defs[id.Name], d.Rhs[0])
				}
			}
		case *ast.ValueSpec:
			if len(d.Names) == len(d.Values) {
				for i, id := range d.Names {
					c.defs[id.Name] = append(c.defs[id.Name], d.Values[i])
				}
			}
		}
		return true
	})
	return c
}

func (c *ctx) param(name string) int {
	for i, p := range c.f.params {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// outcome of resolving where a program comes from.
type outcome struct {
	lit     string // a literal program name
	param   int    // or a parameter of the function (-1: none)
	slice   bool   // the parameter is a slice whose element 0 is the program
	dynamic string // or neither: the expression's text
	problem string // a finding about this use, whatever the program
}

// expand turns a slice expression into its known elements. ok is false when
// they cannot be known here (a parameter, a field, a call).
func (c *ctx) expand(e ast.Expr, depth int) ([]item, bool) {
	if depth > 8 {
		return nil, false
	}
	switch x := e.(type) {
	case *ast.CompositeLit:
		var out []item
		for _, el := range x.Elts {
			out = append(out, item{e: el})
		}
		return out, true
	case *ast.CallExpr:
		if id, ok := x.Fun.(*ast.Ident); ok && id.Name == "append" && len(x.Args) > 0 {
			head, ok := c.expand(x.Args[0], depth+1)
			if !ok {
				return []item{{e: x.Args[0], spread: true}}, true
			}
			for i, a := range x.Args[1:] {
				head = append(head, item{e: a, spread: x.Ellipsis.IsValid() && i == len(x.Args)-2})
			}
			return head, true
		}
	case *ast.Ident:
		if c.param(x.Name) < 0 && len(c.defs[x.Name]) == 1 {
			return c.expand(c.defs[x.Name][0], depth+1)
		}
	}
	return nil, false
}

// at returns element i of a list whose spreads are expanded where they can
// be; rest is what follows it. An element that lies inside a slice that
// cannot be expanded is returned as that slice with offset > 0 or as the
// slice itself (spread) when it is its element 0.
func (c *ctx) flatten(items []item, depth int) []item {
	var out []item
	for _, it := range items {
		if it.spread {
			if xs, ok := c.expand(it.e, depth+1); ok && !(len(xs) == 1 && xs[0].spread && xs[0].e == it.e) {
				out = append(out, c.flatten(xs, depth+1)...)
				continue
			}
		}
		out = append(out, it)
	}
	return out
}

// program resolves the program of an argument list (element 0 runs, the
// rest are its arguments).
func (c *ctx) program(items []item, depth int) []outcome {
	if depth > 8 {
		return []outcome{{param: -1, dynamic: "(too deep)"}}
	}
	items = c.flatten(items, depth)
	if len(items) == 0 {
		return []outcome{{param: -1, dynamic: "(empty argument list)"}}
	}
	first := items[0]
	if first.spread {
		return c.sliceHead(first.e, depth+1)
	}
	return c.value(first.e, items[1:], depth+1)
}

// value resolves a program expression; rest are the arguments after it.
func (c *ctx) value(e ast.Expr, rest []item, depth int) []outcome {
	switch x := e.(type) {
	case *ast.BasicLit:
		name, err := strconv.Unquote(x.Value)
		if err != nil {
			return []outcome{{param: -1, dynamic: x.Value}}
		}
		if name == "ip" && len(rest) >= 3 && c.isLit(rest[0], "netns") && c.isLit(rest[1], "exec") {
			return append([]outcome{{lit: "ip", param: -1}}, c.program(rest[3:], depth+1)...)
		}
		if (name == "sh" || name == "bash") && len(rest) > 0 && c.isLit(rest[0], "-c") {
			return []outcome{{lit: name, param: -1, problem: "a shell command line: run the programs directly, so that this test can check them"}}
		}
		return []outcome{{lit: name, param: -1}}
	case *ast.Ident:
		if i := c.param(x.Name); i >= 0 {
			return []outcome{{param: i}}
		}
		if defs := c.defs[x.Name]; len(defs) > 0 {
			var out []outcome
			for _, d := range defs {
				out = append(out, c.value(d, rest, depth+1)...)
			}
			return out
		}
	case *ast.IndexExpr:
		if lit, ok := x.Index.(*ast.BasicLit); ok && lit.Value == "0" {
			return c.sliceHead(x.X, depth+1)
		}
	case *ast.ParenExpr:
		return c.value(x.X, rest, depth+1)
	case *ast.CallExpr:
		// bin, err := exec.LookPath("go") runs "go".
		if callName(x, c.f.file) == "exec.LookPath" && len(x.Args) == 1 {
			return c.value(x.Args[0], nil, depth+1)
		}
	}
	return []outcome{{param: -1, dynamic: c.text(e)}}
}

// sliceHead resolves element 0 of a slice expression as the program.
func (c *ctx) sliceHead(e ast.Expr, depth int) []outcome {
	if id, ok := e.(*ast.Ident); ok {
		if i := c.param(id.Name); i >= 0 {
			return []outcome{{param: i, slice: true}}
		}
		if defs := c.defs[id.Name]; len(defs) > 0 {
			var out []outcome
			for _, d := range defs {
				out = append(out, c.sliceHead(d, depth+1)...)
			}
			return out
		}
	}
	if xs, ok := c.expand(e, depth); ok {
		return c.program(xs, depth+1)
	}
	// n.run(masqArgs(k)...): the slices the module's function returns.
	if call, ok := e.(*ast.CallExpr); ok && len(c.s.funcs[callName(call, c.f.file)]) > 0 {
		var out []outcome
		for _, f := range c.s.funcs[callName(call, c.f.file)] {
			fc := newCtx(c.s, f)
			for _, r := range f.returns {
				if id, ok := r.(*ast.Ident); ok && id.Name == "nil" {
					continue
				}
				for _, o := range fc.sliceHead(r, depth+1) {
					if o.param >= 0 {
						o = outcome{param: -1, dynamic: "a parameter of " + f.name}
					}
					out = append(out, o)
				}
			}
		}
		return out
	}
	return []outcome{{param: -1, dynamic: c.text(e) + "[0]"}}
}

func (c *ctx) isLit(it item, want string) bool {
	if it.spread {
		return false
	}
	lit, ok := it.e.(*ast.BasicLit)
	if !ok {
		return false
	}
	s, err := strconv.Unquote(lit.Value)
	return err == nil && s == want
}

func (c *ctx) text(e ast.Expr) string {
	var b strings.Builder
	ast.Inspect(e, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.Ident:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(x.Name)
		case *ast.BasicLit:
			b.WriteString(x.Value)
		}
		return true
	})
	return b.String()
}

// argsOf returns the items a call passes from position arg on, seen as the
// program's argument list under s.
func argsOf(call *ast.CallExpr, s spec) ([]item, bool) {
	if s.arg >= len(call.Args) {
		return nil, false
	}
	var items []item
	for i, a := range call.Args[s.arg:] {
		items = append(items, item{e: a, spread: call.Ellipsis.IsValid() && s.arg+i == len(call.Args)-1})
	}
	if s.slice && !s.variadic {
		// A []string passed as a whole (exec(ctx, ns, stdin, argv)).
		items = items[:1]
		items[0].spread = true
	}
	return items, true
}

// scan reads one function: it registers new wrappers and records uses.
// It reports whether it found a new wrapper.
func (s *scanner) scanFunc(f fn, record bool) bool {
	c := newCtx(s, f)
	grew := false
	ast.Inspect(f.body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		name := callName(call, f.file)
		specs := s.wrappers[name]
		for _, sp := range specs {
			items, ok := argsOf(call, sp)
			if !ok {
				continue
			}
			for _, o := range c.program(items, 0) {
				if record && o.problem != "" {
					s.problems = append(s.problems, fmt.Sprintf("%s: %s", s.fset.Position(call.Pos()), o.problem))
				}
				switch {
				case o.lit != "":
					if record {
						s.uses = append(s.uses, use{name: o.lit, pos: s.fset.Position(call.Pos()), file: f.file})
					}
				case o.param >= 0:
					w, ok := paramSpec(f.typs[o.param], o.param, o.slice)
					if !ok {
						// Not a string parameter: a name collision.
						continue
					}
					for _, k := range f.keys() {
						if !slices.Contains(s.wrappers[k], w) {
							s.wrappers[k] = append(s.wrappers[k], w)
							grew = true
						}
					}
				default:
					// Wrappers are matched by name, so a computed argument
					// of another function with the same name is no finding.
					if record && strings.HasPrefix(name, "exec.") {
						s.dynamic = append(s.dynamic, fmt.Sprintf("%s: %s", s.fset.Position(call.Pos()), o.dynamic))
					}
				}
			}
		}
		return true
	})
	return grew
}

// paramSpec is the wrapper spec of parameter i of type t that holds the
// program (slice: element 0 of it); ok is false unless t is string, []string
// or ...string as that needs.
func paramSpec(t ast.Expr, i int, slice bool) (spec, bool) {
	isString := func(e ast.Expr) bool { id, ok := e.(*ast.Ident); return ok && id.Name == "string" }
	switch x := t.(type) {
	case *ast.Ellipsis:
		return spec{arg: i, slice: true, variadic: true}, isString(x.Elt)
	case *ast.ArrayType:
		return spec{arg: i, slice: true}, x.Len == nil && isString(x.Elt) && slice
	case *ast.Ident:
		return spec{arg: i}, x.Name == "string" && !slice
	}
	return spec{}, false
}

// scanModule reads every Go file under root (all build tags).
func scanModule(t *testing.T, root string) *scanner {
	t.Helper()
	s := newScanner()
	var all []fn
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "vendor", "node_modules", "dist", "bin":
				return filepath.SkipDir
			}
			if strings.HasPrefix(d.Name(), ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(s.fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		all = append(all, funcs(f, filepath.ToSlash(rel))...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range all {
		for _, k := range f.keys() {
			s.funcs[k] = append(s.funcs[k], f)
		}
	}
	for round := 0; ; round++ {
		if round > 20 {
			t.Fatal("wrapper discovery did not settle")
		}
		grew := false
		for _, f := range all {
			if s.scanFunc(f, false) {
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	for _, f := range all {
		s.scanFunc(f, true)
	}
	return s
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// TestEveryProgramIsListed is the guard the list exists for: a program that
// some code runs by name and the list lacks would be missing on a new
// machine, where scripts/lab-deps.sh installs only what is listed.
func TestEveryProgramIsListed(t *testing.T) {
	root := moduleRoot(t)
	list, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	s := scanModule(t, root)
	used := map[string]bool{}     // by any code
	usedTest := map[string]bool{} // by code that make test runs
	var bad []string
	for _, u := range s.uses {
		used[u.name] = true
		target := TargetTest
		if strings.HasPrefix(u.file, "e2e/bench/") {
			target = TargetBench
		} else {
			usedTest[u.name] = true
		}
		if err := list.Check(u.name, target); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", u.pos, err))
		}
	}
	bad = append(bad, s.problems...)
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
	// What the scanner could not name: built binaries run by path. The lab
	// checks those at run time (a bare name must be listed there too).
	for _, d := range s.dynamic {
		t.Logf("run by a computed name: %s", d)
	}
	// A listed program nothing runs is dead weight in every install.
	var names []string
	for name := range list {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		e := list[name]
		switch {
		case !used[name]:
			t.Errorf("%s line %d: %s is listed but no Go code runs it (remove it, or the scanner missed a call)", RelPath, e.Line, name)
		case e.Target == TargetTest && !usedTest[name]:
			t.Errorf("%s line %d: %s is listed for %q but only make bench runs it: list it for %q", RelPath, e.Line, name, TargetTest, TargetBench)
		}
	}
	if len(s.uses) < 20 {
		t.Errorf("found only %d program uses: the scanner is broken", len(s.uses))
	}
}
