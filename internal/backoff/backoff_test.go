package backoff

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestBackoffDoublesUpToMaxAndResets(t *testing.T) {
	b := New(10*time.Millisecond, 50*time.Millisecond)
	var got []time.Duration
	for range 5 {
		if b.Peek() != b.cur {
			t.Fatal("Peek is not the next wait")
		}
		got = append(got, b.Next())
	}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != 10*time.Millisecond {
		t.Fatalf("after Reset: %v, want 10ms", d)
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("live context: Sleep reported it ended")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// An hour: only the cancelled context can end it.
	if Sleep(ctx, time.Hour) {
		t.Fatal("cancelled context: Sleep reported it live")
	}
	if Sleep(ctx, 0) || !Sleep(context.Background(), 0) {
		t.Fatal("zero wait must report the context's state")
	}
	if New(time.Hour, time.Hour).Wait(ctx) {
		t.Fatal("Wait on a cancelled context reported it live")
	}
}
