package render

import (
	"fmt"
	"reflect"
	"sort"
)

// Scratch is consul-template's per-render scratch pad: {{ scratch.Set "k" v }}
// stores a value that later actions of the same render read back. Every
// setter returns "" so that it prints nothing.
type Scratch struct {
	values map[string]any
}

// Key reports whether k is set.
func (s *Scratch) Key(k string) bool {
	_, ok := s.values[k]
	return ok
}

// Get returns the value of k, or nil.
func (s *Scratch) Get(k string) any { return s.values[k] }

// Set sets k to v.
func (s *Scratch) Set(k string, v any) string {
	s.init()
	s.values[k] = v
	return ""
}

// SetX sets k to v unless k is already set.
func (s *Scratch) SetX(k string, v any) string {
	s.init()
	if _, ok := s.values[k]; !ok {
		s.values[k] = v
	}
	return ""
}

// MapSet sets key mk of the map stored at k, making the map if need be.
func (s *Scratch) MapSet(k, mk string, v any) (string, error) {
	return s.mapSet(k, mk, v, true)
}

// MapSetX is MapSet that leaves an existing key alone.
func (s *Scratch) MapSetX(k, mk string, v any) (string, error) {
	return s.mapSet(k, mk, v, false)
}

func (s *Scratch) mapSet(k, mk string, v any, override bool) (string, error) {
	s.init()
	if _, ok := s.values[k]; !ok {
		s.values[k] = map[string]any{}
	}
	m, ok := s.values[k].(map[string]any)
	if !ok {
		// The key is not named: a template may build it from a secret.
		return "", fmt.Errorf("the scratch key holds a value of type %T, not a map", s.values[k])
	}
	if holds(v, m, map[uintptr]bool{}) {
		// Printed or encoded, a map inside itself never ends.
		return "", fmt.Errorf("scratch.MapSet: the value holds the map it would be stored in")
	}
	if _, set := m[mk]; override || !set {
		m[mk] = v
	}
	return "", nil
}

// holds reports whether v is m or holds it, through maps and lists.
func holds(v any, m map[string]any, seen map[uintptr]bool) bool {
	switch v := v.(type) {
	case map[string]any:
		p := reflect.ValueOf(v).Pointer()
		if p == reflect.ValueOf(m).Pointer() {
			return true
		}
		if seen[p] {
			return false
		}
		seen[p] = true
		for _, e := range v {
			if holds(e, m, seen) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if holds(e, m, seen) {
				return true
			}
		}
	}
	return false
}

// MapValues returns the values of the map at k, sorted by their keys, or
// nil if k holds no map.
func (s *Scratch) MapValues(k string) ([]any, error) {
	m, ok := s.values[k].(map[string]any)
	if !ok {
		return nil, nil
	}
	keys := make([]string, 0, len(m))
	for mk := range m {
		keys = append(keys, mk)
	}
	sort.Strings(keys)
	out := make([]any, len(keys))
	for i, mk := range keys {
		out[i] = m[mk]
	}
	return out, nil
}

func (s *Scratch) init() {
	if s.values == nil {
		s.values = map[string]any{}
	}
}
