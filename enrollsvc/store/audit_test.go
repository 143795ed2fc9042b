package store

import (
	"context"
	"fmt"
	"testing"
)

// A request's state change and its audit event are one transaction: an event that cannot be
// written fails the change, and a written one carries the request's ID.
func TestRequestChangesCarryTheirEvents(t *testing.T) {
	eachStore(t, testRequestChangesCarryTheirEvents)
}

func testRequestChangesCarryTheirEvents(t *testing.T, s Store) {
	ctx := context.Background()
	bad := Event{ID: 2003, Category: "Admin", Level: "warning", Message: "denied", Fields: map[string]any{"x": make(chan int)}}
	good := Event{ID: 2003, Category: "Admin", Level: "warning", Message: "denied", Fields: map[string]any{"by": "admin"}}

	if _, err := s.CreateRequest(ctx, Request{Template: "T", Account: "a"}, bad); err == nil {
		t.Fatal("CreateRequest with an event that cannot be stored succeeded")
	}
	if list, err := s.ListRequests(ctx, RequestFilter{Limit: 10}); err != nil || len(list) != 0 {
		t.Fatalf("requests after a failed CreateRequest = %v, %v; want none", list, err)
	}

	id, err := s.CreateRequest(ctx, Request{Template: "T", Account: "a"}, good)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetRequestState(ctx, id, RequestDenied, "no", bad); err == nil {
		t.Fatal("SetRequestState with an event that cannot be stored succeeded")
	}
	if r, err := s.GetRequest(ctx, id); err != nil || r.State != RequestPending {
		t.Fatalf("request after a failed SetRequestState = %+v, %v; want still pending", r, err)
	}
	if err := s.SetRequestState(ctx, id, RequestDenied, "no", good); err != nil {
		t.Fatal(err)
	}
	evs, err := s.ListEvents(ctx, EventFilter{ID: 2003, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("events = %d, want 2 (creation and denial)", len(evs))
	}
	for _, e := range evs {
		if fmt.Sprint(e.Fields["request_id"]) != fmt.Sprint(id) || e.Fields["by"] != "admin" {
			t.Errorf("event fields = %v, want request_id %d and the caller's fields", e.Fields, id)
		}
	}
	if _, ok := good.Fields["request_id"]; ok {
		t.Error("the store changed the caller's event fields")
	}
}
