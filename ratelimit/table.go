package ratelimit

import "container/list"

// DefaultCapacity is the number of keys a table holds unless told otherwise: at a few hundred
// bytes a key, tens of megabytes at most.
const DefaultCapacity = 1 << 16

// table maps keys to values and holds at most max of them: adding a key to a full table drops
// the key used least recently. The caller holds the lock of the limiter that owns it.
type table[V any] struct {
	max   int
	order *list.List // of *entry[V], most recently used at the front
	byKey map[string]*list.Element
}

type entry[V any] struct {
	key string
	val V
}

func newTable[V any](max int) *table[V] {
	if max <= 0 {
		max = DefaultCapacity
	}
	return &table[V]{max: max, order: list.New(), byKey: map[string]*list.Element{}}
}

// get returns the value of key, making it with mk when the key is new.
func (t *table[V]) get(key string, mk func() V) V {
	if el, ok := t.byKey[key]; ok {
		t.order.MoveToFront(el)
		return el.Value.(*entry[V]).val
	}
	for t.order.Len() >= t.max {
		last := t.order.Back()
		t.order.Remove(last)
		delete(t.byKey, last.Value.(*entry[V]).key)
	}
	v := mk()
	t.byKey[key] = t.order.PushFront(&entry[V]{key: key, val: v})
	return v
}

// lookup returns the value of key without making one or changing the order.
func (t *table[V]) lookup(key string) (V, bool) {
	el, ok := t.byKey[key]
	if !ok {
		var zero V
		return zero, false
	}
	return el.Value.(*entry[V]).val, true
}

// remove drops key.
func (t *table[V]) remove(key string) {
	if el, ok := t.byKey[key]; ok {
		t.order.Remove(el)
		delete(t.byKey, key)
	}
}

// len is the number of keys held.
func (t *table[V]) len() int { return t.order.Len() }
