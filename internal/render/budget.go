package render

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"time"
)

// A template is configuration, but what it renders may be steered by data
// from Vault (a loop count, a string to indent or replace in), and a
// template's own mistake (a define that calls itself) must not take the
// process down. So one render is bounded: its output, each string a
// function returns and each executeTemplate's output are at most
// MaxOutput bytes; those strings come to at most maxBuilt bytes in all
// (what a render can hold at once, within the sidecar's memory); it
// nests executeTemplate at most maxTemplateDepth deep; and it ends within
// MaxRenderTime, not counting the time Vault takes to answer {{ secret }}
// and {{ secrets }}. Past a bound the render fails with an error that
// names it, and nothing half-rendered is written. A render that overruns
// its time in text/template itself (a range over data whose body calls
// nothing), where nothing can stop it, is abandoned: Execute returns,
// and the template is not rendered again by this process.
const (
	// MaxOutput is far above any credential file, and small beside the
	// sidecar's memory.
	MaxOutput        = 1 << 20
	maxBuilt         = 16 << 20
	MaxRenderTime    = 10 * time.Second
	maxTemplateDepth = 100
)

var (
	errTooDeep  = fmt.Errorf("executeTemplate: nested more than %d deep: does a template call itself?", maxTemplateDepth)
	errTooLarge = fmt.Errorf("the template writes more than %d bytes (1 MiB), the most a secret file may hold: check for a loop, an indent or a replace that runs away", MaxOutput)
	errTooBig   = fmt.Errorf("the template's functions built more than %d bytes (16 MiB) of strings: check for a loop that builds ever longer ones", maxBuilt)
	errTooSlow  = fmt.Errorf("rendering took longer than %s: check for a loop that runs away (a range with a large count)", MaxRenderTime)
)

// budget is what is left of one render's bounds. written, built, depth
// and err belong to the goroutine that executes the template; deadline
// and slow are also read by a loop's feeding goroutine and by Execute's
// watchdog.
type budget struct {
	deadline atomic.Int64 // Unix nanoseconds
	written  int
	built    int
	depth    int
	err      error
	slow     atomic.Bool
}

// renderTime is MaxRenderTime; tests shorten it.
var renderTime = MaxRenderTime

func newBudget(now time.Time) *budget {
	b := &budget{}
	b.deadline.Store(now.Add(renderTime).UnixNano())
	return b
}

// extend moves the deadline back by d: time spent waiting for Vault.
func (b *budget) extend(d time.Duration) { b.deadline.Add(int64(d)) }

func (b *budget) due() time.Time { return time.Unix(0, b.deadline.Load()) }

// overdue reports, from any goroutine, whether the render ran out of
// time, and records it.
func (b *budget) overdue() bool {
	if time.Now().After(b.due()) {
		b.slow.Store(true)
	}
	return b.slow.Load()
}

// check returns the bound the render has passed, if any.
func (b *budget) check() error {
	if b.err == nil && b.overdue() {
		b.err = errTooSlow
	}
	return b.err
}

// write counts n more bytes of output.
func (b *budget) write(n int) error {
	if b.written += n; b.written > MaxOutput && b.err == nil {
		b.err = errTooLarge
	}
	return b.check()
}

// build counts n more bytes a function built.
func (b *budget) build(n int) error {
	if b.built += n; b.built > maxBuilt && b.err == nil {
		b.err = errTooBig
	}
	return b.check()
}

// budgetWriter writes into buf what count allows: the render's output
// (budget.write), or an executeTemplate's (see executeTemplate).
type budgetWriter struct {
	buf   *bytes.Buffer
	count func(int) error
}

func (w budgetWriter) Write(p []byte) (int, error) {
	if err := w.count(len(p)); err != nil {
		return 0, err
	}
	return w.buf.Write(p)
}

// fits refuses a string of n bytes that a function fn would build.
func fits(fn string, n int) error {
	if n > MaxOutput || n < 0 {
		return fmt.Errorf("%s: the result would be longer than %d bytes (1 MiB)", fn, MaxOutput)
	}
	return nil
}

// charged wraps fn, template function name, so that every string or
// []byte it returns is checked against MaxOutput and charged to the
// render under way (cur) before the template sees it; past a bound the
// call fails. A function whose arguments can add up to any length (print)
// checks them first itself (argsFit): the result is built before it can
// be checked.
func charged(name string, fn any, cur func() *render) any {
	v := reflect.ValueOf(fn)
	t := v.Type()
	hasErr := t.NumOut() == 2
	return reflect.MakeFunc(t, func(args []reflect.Value) []reflect.Value {
		var out []reflect.Value
		if t.IsVariadic() {
			out = v.CallSlice(args)
		} else {
			out = v.Call(args)
		}
		if hasErr && !out[1].IsNil() {
			return out
		}
		n := 0
		switch r := out[0]; {
		case r.Kind() == reflect.String:
			n = r.Len()
		case r.Kind() == reflect.Slice && r.Type().Elem().Kind() == reflect.Uint8:
			n = r.Len()
		}
		err := fits(name, n)
		if err == nil {
			err = cur().budget.build(n)
		}
		if err != nil {
			if !hasErr {
				panic(err) // text/template returns a function's panic as its error
			}
			out[1] = reflect.ValueOf(&err).Elem()
		}
		return out
	}).Interface()
}

// checkPrintf refuses a printf whose result would be longer than
// MaxOutput before fmt builds it (fmt builds the whole string first): the
// widths and precisions of its verbs, and each verb's largest argument,
// added up. A width or precision taken from an argument ('*') is refused.
func checkPrintf(format string, args []any) error {
	most := 0 // the longest argument, printed
	for _, a := range args {
		most = max(most, printedLen(a))
	}
	total := len(format)
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		if i < len(format) && format[i] == '%' {
			continue
		}
		for ; i < len(format) && strings.IndexByte("+-# 0", format[i]) >= 0; i++ {
		}
		for part := 0; part < 2 && i < len(format); part++ {
			if format[i] == '[' { // an argument index
				for i < len(format) && format[i] != ']' {
					i++
				}
				i++
			}
			if i < len(format) && format[i] == '*' {
				return errors.New("printf: a width or precision taken from an argument ('*') is not supported")
			}
			n := 0
			for ; i < len(format) && format[i] >= '0' && format[i] <= '9'; i++ {
				n = min(n*10+int(format[i]-'0'), MaxOutput+1)
			}
			total += n
			if part == 0 && i < len(format) && format[i] == '.' {
				i++
				continue
			}
			break
		}
		total += most
		if total > MaxOutput {
			return fits("printf", total)
		}
	}
	return nil
}

// argsFit refuses arguments that printed together would be longer than
// MaxOutput, before fn builds the string.
func argsFit(fn string, args []any) error {
	n := 0
	for _, a := range args {
		if n += printedLen(a); n > MaxOutput {
			return fits(fn, n)
		}
	}
	return nil
}

// printedLen is how long a is printed: a string's or []byte's own length, any
// other value's as fmt prints it.
func printedLen(a any) int {
	switch a := a.(type) {
	case string:
		return len(a)
	case []byte:
		return len(a)
	}
	return len(fmt.Sprint(a))
}
