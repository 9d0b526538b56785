package object

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Memory is a Store in memory, for tests. Fail, if set, is asked before
// every call and fails it with what it returns: a server down, a slow one
// (sleep, then nil), one that lies (change the object, then nil).
type Memory struct {
	Fail func(op, key string) error

	mu      sync.Mutex
	objects map[string][]byte
}

var _ Store = (*Memory)(nil)

// NewMemory makes an empty store.
func NewMemory() *Memory { return &Memory{objects: map[string][]byte{}} }

func (m *Memory) fail(op, key string) error {
	if m.Fail == nil {
		return nil
	}
	if err := m.Fail(op, key); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	return nil
}

func (m *Memory) Get(_ context.Context, key string, limit int64) ([]byte, error) {
	if err := m.fail("get", key); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.objects[key]
	switch {
	case !ok:
		return nil, fmt.Errorf("%s: %w", key, ErrNotExist)
	case int64(len(data)) > limit:
		return nil, fmt.Errorf("%s: %d bytes, more than %d: %w", key, len(data), limit, ErrTooLarge)
	}
	return append([]byte(nil), data...), nil
}

func (m *Memory) Put(_ context.Context, key string, data []byte) error {
	if err := m.fail("put", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[key] = append([]byte(nil), data...)
	return nil
}

func (m *Memory) PutIfAbsent(_ context.Context, key string, data []byte) (bool, error) {
	if err := m.fail("put", key); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[key]; ok {
		return false, nil
	}
	m.objects[key] = append([]byte(nil), data...)
	return true, nil
}

func (m *Memory) Stat(_ context.Context, key string) (Info, error) {
	if err := m.fail("stat", key); err != nil {
		return Info{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.objects[key]
	if !ok {
		return Info{}, fmt.Errorf("%s: %w", key, ErrNotExist)
	}
	return info(key, data), nil
}

func (m *Memory) List(_ context.Context, prefix string) ([]Info, error) {
	if err := m.fail("list", prefix); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Info
	for key, data := range m.objects {
		if strings.HasPrefix(key, prefix) {
			out = append(out, info(key, data))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (m *Memory) Remove(_ context.Context, key string) error {
	if err := m.fail("remove", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, key)
	return nil
}

// info describes an object with an S3-style ETag, the MD5 of its content.
func info(key string, data []byte) Info {
	sum := md5.Sum(data)
	return Info{Key: key, Size: int64(len(data)), ETag: hex.EncodeToString(sum[:])}
}
