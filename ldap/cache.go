package ldap

import (
	"strings"
	"sync"
	"time"
)

// maxCacheItems bounds memory: beyond it, expired items are swept, and if that is not enough, everything.
const maxCacheItems = 50000

// cache maps keys ("acct:...", "tmpl:...", "es:...") to values that expire after ttl. A negative ttl disables
// it. Values are shared with callers, who treat them as read-only.
type cache struct {
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	items map[string]cacheItem
	byDN  map[string]map[string]bool // lower-case DN → the keys of the items read from it, for dropDN
}

type cacheItem struct {
	v       any
	dn      string // the directory object it came from, for dropDN (lower-case)
	expires time.Time
}

func newCache(ttl time.Duration, now func() time.Time) *cache {
	return &cache{ttl: ttl, now: now, items: map[string]cacheItem{}, byDN: map[string]map[string]bool{}}
}

// get returns a value that has not expired. Expired items are never returned.
func (c *cache) get(key string) (any, bool) {
	if c.ttl < 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	it, ok := c.items[key]
	if !ok {
		return nil, false
	}
	if !c.now().Before(it.expires) {
		c.deleteLocked(key, it)
		return nil, false
	}
	return it.v, true
}

func (c *cache) put(key, dn string, v any) {
	if c.ttl < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.items) >= maxCacheItems {
		for k, it := range c.items {
			if !now.Before(it.expires) {
				c.deleteLocked(k, it)
			}
		}
		if len(c.items) >= maxCacheItems {
			clear(c.items)
			clear(c.byDN)
		}
	}
	if old, ok := c.items[key]; ok {
		c.deleteLocked(key, old)
	}
	it := cacheItem{v: v, dn: strings.ToLower(dn), expires: now.Add(c.ttl)}
	c.items[key] = it
	if it.dn != "" {
		keys := c.byDN[it.dn]
		if keys == nil {
			keys = map[string]bool{}
			c.byDN[it.dn] = keys
		}
		keys[key] = true
	}
}

// deleteLocked removes the item key (it) and its entry in byDN. Call with c.mu held.
func (c *cache) deleteLocked(key string, it cacheItem) {
	delete(c.items, key)
	if keys := c.byDN[it.dn]; keys != nil {
		delete(keys, key)
		if len(keys) == 0 {
			delete(c.byDN, it.dn)
		}
	}
}

// dropDN forgets every item read from the object dn (after we changed it).
func (c *cache) dropDN(dn string) {
	dn = strings.ToLower(dn)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.byDN[dn] {
		delete(c.items, k)
	}
	delete(c.byDN, dn)
}

func (c *cache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.items)
	clear(c.byDN)
}
