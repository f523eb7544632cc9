package render

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// num is a template number as consul-template's arithmetic sees it: every
// signed integer kind is an int64, every unsigned one a uint64, every float
// a float64. Anything else (a string, a json.Number from Vault) is not a
// number.
type num struct {
	kind byte // 'i', 'u' or 'f'
	i    int64
	u    uint64
	f    float64
}

func toNum(v any) (num, bool) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return num{kind: 'i', i: rv.Int()}, true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return num{kind: 'u', u: rv.Uint()}, true
	case reflect.Float32, reflect.Float64:
		return num{kind: 'f', f: rv.Float()}, true
	}
	return num{}, false
}

func (n num) value() any {
	switch n.kind {
	case 'i':
		return n.i
	case 'u':
		return n.u
	}
	return n.f
}

func (n num) float() float64 {
	switch n.kind {
	case 'i':
		return float64(n.i)
	case 'u':
		return float64(n.u)
	}
	return n.f
}

func (n num) int() int64 {
	if n.kind == 'u' {
		return int64(n.u)
	}
	return n.i
}

// operands converts consul-template's (b, a) argument pair. An operand
// that is not a number is named by its type only: its value may be a
// secret.
func operands(name string, b, a any) (num, num, error) {
	x, ok := toNum(a)
	if !ok {
		return num{}, num{}, notNumber(name, a)
	}
	y, ok := toNum(b)
	if !ok {
		return num{}, num{}, notNumber(name, b)
	}
	return x, y, nil
}

func notNumber(name string, v any) error {
	if _, ok := v.(json.Number); ok {
		return fmt.Errorf("%s: a number from Vault (json.Number) is not a number here: convert it with parseInt or parseFloat first", name)
	}
	return fmt.Errorf("%s: unknown type for an operand of type %T", name, v)
}

// arith applies an operation to a and b (given as b, a: the pipeline puts
// its value last, so {{ 5 | subtract 1 }} is 5 - 1). A float on either side
// gives a float64, two unsigned integers a uint64, anything else an int64.
func arith(name string, b, a any, fi func(x, y int64) (int64, error), fu func(x, y uint64) (uint64, error), ff func(x, y float64) (float64, error)) (any, error) {
	x, y, err := operands(name, b, a)
	if err != nil {
		return nil, err
	}
	switch {
	case x.kind == 'f' || y.kind == 'f':
		if ff == nil {
			return nil, fmt.Errorf("%s: works on integers only, not on an operand of type %T", name, pickFloat(x, y, a, b))
		}
		return ff(x.float(), y.float())
	case x.kind == 'u' && y.kind == 'u':
		return fu(x.u, y.u)
	}
	return fi(x.int(), y.int())
}

// pickFloat returns the float operand, the one consul-template's modulo
// names in its error.
func pickFloat(x, _ num, a, b any) any {
	if x.kind == 'f' {
		return a
	}
	return b
}

var errDivZero = fmt.Errorf("division by zero")

func add(b, a any) (any, error) {
	return arith("add", b, a,
		func(x, y int64) (int64, error) { return x + y, nil },
		func(x, y uint64) (uint64, error) { return x + y, nil },
		func(x, y float64) (float64, error) { return x + y, nil })
}

func subtract(b, a any) (any, error) {
	return arith("subtract", b, a,
		func(x, y int64) (int64, error) { return x - y, nil },
		func(x, y uint64) (uint64, error) { return x - y, nil },
		func(x, y float64) (float64, error) { return x - y, nil })
}

func multiply(b, a any) (any, error) {
	return arith("multiply", b, a,
		func(x, y int64) (int64, error) { return x * y, nil },
		func(x, y uint64) (uint64, error) { return x * y, nil },
		func(x, y float64) (float64, error) { return x * y, nil })
}

func divide(b, a any) (any, error) {
	return arith("divide", b, a,
		func(x, y int64) (int64, error) {
			if y == 0 {
				return 0, fmt.Errorf("divide: %w", errDivZero)
			}
			return x / y, nil
		},
		func(x, y uint64) (uint64, error) {
			if y == 0 {
				return 0, fmt.Errorf("divide: %w", errDivZero)
			}
			return x / y, nil
		},
		func(x, y float64) (float64, error) { return x / y, nil })
}

// modulo works on integers only, like consul-template's.
func modulo(b, a any) (any, error) {
	return arith("modulo", b, a,
		func(x, y int64) (int64, error) {
			if y == 0 {
				return 0, fmt.Errorf("modulo: %w", errDivZero)
			}
			return x % y, nil
		},
		func(x, y uint64) (uint64, error) {
			if y == 0 {
				return 0, fmt.Errorf("modulo: %w", errDivZero)
			}
			return x % y, nil
		},
		nil)
}

// less compares x and y in the domain consul-template uses: floats if
// either is a float, unsigned if both are unsigned, signed otherwise.
func less(x, y num) bool {
	switch {
	case x.kind == 'f' || y.kind == 'f':
		return x.float() < y.float()
	case x.kind == 'u' && y.kind == 'u':
		return x.u < y.u
	}
	return x.int() < y.int()
}

// minimum returns the smaller of a and b, each keeping its own type.
func minimum(b, a any) (any, error) {
	x, y, err := operands("minimum", b, a)
	if err != nil {
		return nil, err
	}
	if less(x, y) {
		return x.value(), nil
	}
	return y.value(), nil
}

// maximum returns the larger of a and b, each keeping its own type.
func maximum(b, a any) (any, error) {
	x, y, err := operands("maximum", b, a)
	if err != nil {
		return nil, err
	}
	if less(y, x) {
		return x.value(), nil
	}
	return y.value(), nil
}
