package render

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// A template is configuration, but what it renders may be steered by data
// from Vault (a loop count, a string to indent or replace in), and a
// template's own mistake (a define that calls itself) must not take the
// process down. So one render is bounded: it writes at most MaxOutput
// bytes in all (its output and that of every executeTemplate it runs),
// finishes within MaxRenderTime, nests executeTemplate at most
// maxTemplateDepth deep, and no function builds a string longer than
// MaxOutput. Past a bound the render fails with an error that names it;
// nothing half-rendered is written.
const (
	// MaxOutput is far above any credential file, and small beside the
	// sidecar's memory.
	MaxOutput        = 1 << 20
	MaxRenderTime    = 10 * time.Second
	maxTemplateDepth = 100
)

var (
	errTooDeep  = fmt.Errorf("executeTemplate: nested more than %d deep: does a template call itself?", maxTemplateDepth)
	errTooLarge = fmt.Errorf("the template writes more than %d bytes (1 MiB), the most a secret file may hold: check for a loop, an indent or a replace that runs away", MaxOutput)
	errTooSlow  = fmt.Errorf("rendering took longer than %s: check for a loop that runs away (a range over loop with a large count)", MaxRenderTime)
)

// budget is what is left of one render's bounds. written, depth and err
// belong to the goroutine that executes the template; a loop's feeding
// goroutine only reads deadline and sets slow.
type budget struct {
	deadline time.Time
	written  int
	depth    int
	err      error
	slow     atomic.Bool
}

// renderTime is MaxRenderTime; tests shorten it.
var renderTime = MaxRenderTime

func newBudget(now time.Time) *budget { return &budget{deadline: now.Add(renderTime)} }

// spend counts n more bytes written; it returns the bound the render has
// passed, if any.
func (b *budget) spend(n int) error {
	if b.err != nil {
		return b.err
	}
	b.written += n
	switch {
	case b.written > MaxOutput:
		b.err = errTooLarge
	case b.slow.Load() || time.Now().After(b.deadline):
		b.err = errTooSlow
	}
	return b.err
}

// overdue reports, from any goroutine, whether the render ran out of
// time, and records it.
func (b *budget) overdue() bool {
	if time.Now().After(b.deadline) {
		b.slow.Store(true)
	}
	return b.slow.Load()
}

// result is the bound passed, also one a loop's feeder saw (it can only
// end the range early, which would leave the output short).
func (b *budget) result() error {
	if b.err == nil && b.slow.Load() {
		b.err = errTooSlow
	}
	return b.err
}

// budgetWriter writes into buf what b allows.
type budgetWriter struct {
	buf *bytes.Buffer
	b   *budget
}

func (w budgetWriter) Write(p []byte) (int, error) {
	if err := w.b.spend(len(p)); err != nil {
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

// checkWidths refuses a printf format whose width or precision would build
// a string longer than MaxOutput, or is taken from an argument ('*'): fmt
// builds the whole string before anything can look at its length.
func checkWidths(format string) error {
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		for i++; i < len(format) && strings.IndexByte("+-# 0", format[i]) >= 0; i++ {
		}
		if i < len(format) && format[i] == '[' { // an argument index
			for i < len(format) && format[i] != ']' {
				i++
			}
			i++
		}
		for part := 0; part < 2 && i < len(format); part++ {
			if format[i] == '*' {
				return errors.New("printf: a width or precision taken from an argument ('*') is not supported")
			}
			n := 0
			for ; i < len(format) && format[i] >= '0' && format[i] <= '9'; i++ {
				n = min(n*10+int(format[i]-'0'), MaxOutput+1)
			}
			if err := fits("printf", n); err != nil {
				return err
			}
			if part == 0 && i < len(format) && format[i] == '.' {
				i++
				continue
			}
			break
		}
	}
	return nil
}
