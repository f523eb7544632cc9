package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"text/template/parse"
	"time"
)

// Secret is what a template sees of a secret: the fields of Vault's
// response, as consul-template shows them (for KV v2, .Data.data holds the
// fields and .Data.metadata the version).
type Secret struct {
	Data          map[string]any
	LeaseID       string
	LeaseDuration int
	Renewable     bool
	Warnings      []string
}

// Lookup returns the secret at a Vault path for {{ secret "PATH" }}.
type Lookup func(path string) (*Secret, error)

// List returns the keys under a Vault path for {{ secrets "PATH" }},
// sorted.
type List func(path string) ([]string, error)

// Template is a parsed secret template. It is parsed once and rendered any
// number of times, one render at a time.
type Template struct {
	name  string
	text  string
	paths []string

	mu        sync.Mutex
	tmpl      *template.Template
	run       *render // the render under way, under mu
	abandoned bool    // a render overran its time and still runs
}

// render is the state of one Execute: what secret and secrets read, the
// scratch pad, done, which ends what the render started (loop), and what
// is left of its bounds.
type render struct {
	lookup  Lookup
	list    List
	done    chan struct{}
	budget  *budget
	scratch Scratch
	seen    []*Secret
}

// parsed keeps the templates parsed so far, so that vault-init's check
// before login and its render share one parse, and vault-renew parses each
// template once for its life. It is bounded: templates are configuration,
// a handful per pod.
var parsed struct {
	sync.Mutex
	m map[[2]string]*Template
}

const maxParsed = 64

// ParseTemplate checks text and returns the template. name is used in
// errors (the --template value). A template that calls a consul-template
// function podlease leaves out is refused here, before any login, with the
// function's name and the reason.
func ParseTemplate(name, text string) (*Template, error) {
	key := [2]string{name, text}
	parsed.Lock()
	t := parsed.m[key]
	parsed.Unlock()
	if t != nil {
		return t, nil
	}
	t = &Template{name: name, text: text}
	if err := t.parse(); err != nil {
		return nil, err
	}
	paths, err := checkCalls(t.tmpl)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	t.paths = paths
	parsed.Lock()
	if parsed.m == nil {
		parsed.m = map[[2]string]*Template{}
	}
	if len(parsed.m) < maxParsed {
		parsed.m[key] = t
	}
	parsed.Unlock()
	return t, nil
}

// Paths returns the Vault paths the template reads with a literal
// {{ secret "PATH" }}, so they can be checked against --secret before
// login. Paths built at render time are checked when rendering.
func (t *Template) Paths() []string { return t.paths }

// NotGiven is the error for a {{ secret "PATH" }} whose path no --secret
// names.
func NotGiven(path string) error {
	return fmt.Errorf("%q is not a path given with --secret: add --secret NAME=%s", path, path)
}

// SecretPath normalizes a path given to {{ secret }} the way
// consul-template does: surrounding spaces and slashes do not count.
func SecretPath(p string) string { return strings.Trim(strings.TrimSpace(p), "/") }

// parse parses t's text. The root template is unnamed, as in
// consul-template, so that no {{ define }} can clash with it; errors are
// prefixed with t's name instead. The functions that depend on the render
// read it from t.run.
func (t *Template) parse() error {
	tmpl := template.New("").Option("missingkey=error")
	funcs := dataFuncs(tmpl, func() *render { return t.run })
	funcs["scratch"] = func() *Scratch { return &t.run.scratch }
	funcs["secret"] = func(args ...string) (any, error) {
		if len(args) == 0 {
			return nil, nil
		}
		path := SecretPath(args[0])
		if len(args) > 1 {
			return nil, fmt.Errorf("secret %q: writing parameters is not supported; give the path with --secret", path)
		}
		r := t.run
		if r.lookup == nil {
			return nil, NotGiven(path)
		}
		start := time.Now()
		s, err := r.lookup(path)
		r.budget.extend(time.Since(start)) // Vault's time is not the template's
		if s != nil {
			r.seen = append(r.seen, s)
		}
		return s, err
	}
	funcs["secrets"] = func(path string) ([]string, error) {
		path = SecretPath(path)
		if path == "" {
			return nil, nil
		}
		r := t.run
		if r.list == nil {
			return nil, fmt.Errorf("secrets %q: no lister", path)
		}
		start := time.Now()
		keys, err := r.list(path)
		r.budget.extend(time.Since(start))
		return keys, err
	}
	var err error
	t.tmpl, err = tmpl.Funcs(funcs).Parse(t.text)
	if err != nil {
		return located(t.name, explainUndefined(err))
	}
	return nil
}

// checkCalls walks every action of tmpl: it returns the literal paths of
// {{ secret "PATH" }} and refuses a secret call with write parameters.
func checkCalls(tmpl *template.Template) ([]string, error) {
	seen := map[string]bool{}
	var paths []string
	var walkErr error
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		if n == nil || walkErr != nil {
			return
		}
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.ChainNode:
			walk(n.Node)
		case *parse.CommandNode:
			if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "secret" && len(n.Args) > 1 {
				lit, isLit := n.Args[1].(*parse.StringNode)
				if len(n.Args) > 2 {
					what := "a path built at render time"
					if isLit {
						what = strconv.Quote(SecretPath(lit.Text))
					}
					walkErr = fmt.Errorf("secret %s with parameters writes to Vault (it issues something new at every render); podlease only reads: give a read path with --secret", what)
					return
				}
				if isLit && !seen[SecretPath(lit.Text)] {
					seen[SecretPath(lit.Text)] = true
					paths = append(paths, SecretPath(lit.Text))
				}
			}
			for _, a := range n.Args {
				walk(a)
			}
		}
	}
	for _, t := range tmpl.Templates() {
		if t.Tree != nil {
			walk(t.Tree.Root)
		}
	}
	sort.Strings(paths)
	return paths, walkErr
}

// Execute renders the template with self as the dot, resolving
// {{ secret "PATH" }} through lookup and {{ secrets "PATH" }} through list.
// An error never quotes a secret value or a piece of one: the template
// functions name their cause, not their arguments; the messages of
// text/template's own that print a value the template computed are cut
// back (see valueEchoes); and any whole value of the secrets the template
// read that is still in the message is replaced with [redacted].
func (t *Template) Execute(self *Secret, lookup Lookup, list List) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.abandoned {
		return nil, fmt.Errorf("%s: an earlier render of this template ran past %s and was abandoned; it is not rendered again until the process restarts", t.name, MaxRenderTime)
	}
	r := &render{lookup: lookup, list: list, done: make(chan struct{}), budget: newBudget(time.Now()), seen: []*Secret{self}}
	t.run = r
	var buf bytes.Buffer
	finished := make(chan error, 1)
	go func() { finished <- t.tmpl.Execute(budgetWriter{&buf, r.budget.write}, self) }()
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-finished:
			waiting = false
		case <-time.After(time.Until(r.budget.due()) + abandonAfter):
			if time.Now().Before(r.budget.due().Add(abandonAfter)) {
				continue // a lookup moved the deadline
			}
			// Spinning in text/template itself (a range over data
			// whose body calls no function), where nothing can stop
			// it: abandoned. It keeps t.run, and t is not run again.
			t.abandoned = true
			r.budget.slow.Store(true)
			close(r.done)
			return nil, fmt.Errorf("%s: %w", t.name, errTooSlow)
		}
	}
	close(r.done)
	t.run = nil
	if berr := r.budget.check(); berr != nil {
		// Also when Execute "succeeded": a loop cut short by the clock
		// ends its range early.
		return nil, fmt.Errorf("%s: %w", t.name, berr)
	}
	if err != nil {
		return nil, located(t.name, redact(cutValues(err), r.seen))
	}
	return buf.Bytes(), nil
}

// abandonAfter is how long past its deadline Execute waits for a render
// before it abandons it: one checks its clock at every loop turn, write
// and function call.
const abandonAfter = time.Second

// valueEchoes are the execution errors of text/template (Go 1.26) that
// print a value the template computed: a list index, slice bounds, the
// operands of eq, what range or if was given. Such a value may come from a
// secret by any number of steps (split, toUpper, parseInt), so each
// message is cut back to what it says about the template; the location
// and the action in <...> before it are the template's own text.
var valueEchoes = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`index out of range: -?\d+`), "index out of range"},
	{regexp.MustCompile(`invalid slice index: -?\d+ > -?\d+`), "invalid slice index: a lower bound is above an upper one"},
	{regexp.MustCompile(`(?s)non-comparable types? .*`), "non-comparable types (eq compares only basic values)"},
	{regexp.MustCompile(`(?s)range can't iterate over .*`), "range can't iterate over a value of this type"},
	{regexp.MustCompile(`(?s)can't use .* iterate over more than one variable`), "range can't iterate over a value of this type with two variables"},
	{regexp.MustCompile(`(?s)range over send-only channel .*`), "range over a send-only channel"},
	{regexp.MustCompile(`(?s)if/with can't use .*`), "if/with can't use a value of this type"},
}

// cutValues removes from err's message the values text/template prints.
func cutValues(err error) error {
	msg := err.Error()
	cut := msg
	for _, e := range valueEchoes {
		cut = e.re.ReplaceAllLiteralString(cut, e.with)
	}
	if cut == msg {
		return err
	}
	return errors.New(cut)
}

// located names the template file where text/template names the unnamed
// root template: "template: :2: ..." becomes "FILE:2: ...".
func located(name string, err error) error {
	msg := err.Error()
	msg = strings.Replace(msg, "template: :", name+":", 1)
	msg = strings.Replace(msg, `executing "" at `, "at ", 1)
	msg = strings.Replace(msg, "started at :", "started at line ", 1)
	return errors.New(msg)
}

// redact removes every value of secrets from err's message, raw and as Go
// or JSON would quote it, longest first.
func redact(err error, secrets []*Secret) error {
	var vals []string
	var collect func(v any)
	collect = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, e := range v {
				collect(e)
			}
		case []any:
			for _, e := range v {
				collect(e)
			}
		case string:
			vals = append(vals, v)
		case json.Number:
			vals = append(vals, string(v))
		}
	}
	for _, s := range secrets {
		if s != nil {
			collect(s.Data)
		}
	}
	var forms []string
	for _, v := range vals {
		if v == "" {
			continue
		}
		forms = append(forms, v)
		if q := strconv.Quote(v); q[1:len(q)-1] != v {
			forms = append(forms, q[1:len(q)-1])
		}
		if b, _ := json.Marshal(v); string(b[1:len(b)-1]) != v {
			forms = append(forms, string(b[1:len(b)-1]))
		}
	}
	if len(forms) == 0 {
		return err
	}
	sort.Slice(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, "[redacted]")
	}
	// The location and the action are the template's own text: a short
	// value ("1", a KV version) must not garble its line and column.
	msg := err.Error()
	loc := location.FindString(msg)
	return errors.New(loc + strings.NewReplacer(pairs...).Replace(msg[len(loc):]))
}

// location is how text/template starts an execution error: the template,
// line and column, and the action.
var location = regexp.MustCompile(`^template: [^:\s]*:\d+(:\d+)?: (executing "[^"]*" at <[^>]*>: )?`)
