// A connection's events, from libvirt's event-loop thread (event_loop.h) to JS.
//
// Order: every registration of a connection (each domain event kind and the
// close callback) feeds the one thread-safe function of the connection's
// channel, so JS receives the events in the order libvirt dispatched them,
// whatever their kinds.
//
// Teardown: libvirt keeps each registration's opaque pointer until the
// registration is removed and may call it at any moment. Node finalizes a
// thread-safe function when its environment goes away (a worker thread ends),
// and calling one after that is a use after free in the Node versions this
// package supports. So a registration points at the channel's EventSink, shared
// and reference-counted, which forwards to the thread-safe function under a
// mutex only while that function is alive: the environment's cleanup hook and
// the function's finalizer both close the sink before Node frees the function.
// An event that finds the sink closed is dropped, and its domain reference goes
// to the release thread like every other (never freed on libvirt's thread).
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <memory>
#include <vector>

namespace lvb {

class EventSink;
struct ChannelContext;

// What libvirt holds for one registration: freed by FreeEventRegistration.
struct EventRegistration {
  std::shared_ptr<EventSink> sink;
};

// JS thread; owned by the connection's wrapper.
class EventChannel {
 public:
  // `handler(event)` receives every event of `connection`, one object each,
  // with a `kind` ('lifecycle', 'block-job', 'job-completed', 'reboot', 'close').
  EventChannel(Napi::Env env, Napi::Object connection, Napi::Function handler);
  ~EventChannel();
  EventChannel(const EventChannel&) = delete;
  EventChannel& operator=(const EventChannel&) = delete;

  // What each registration handed to libvirt points at.
  const std::shared_ptr<EventSink>& sink() const { return sink_; }

  // Bookkeeping of the registrations libvirt holds or is being asked for:
  // while there is one, the channel keeps the process and the connection alive.
  void RegistrationStarted();
  void RegistrationFailed();
  void DomainEventRegistered(int callbackId);
  void DomainEventDeregistered(int callbackId);
  void CloseCallbackRegistered();
  void CloseCallbackUnregistered();

  // What close() has to remove before the connection's last reference goes.
  const std::vector<int>& domainCallbackIds() const { return domainCallbackIds_; }
  bool closeCallbackRegistered() const { return closeCallbackRegistered_; }
  // Whether the daemon was ever asked for domain events on this connection: it may
  // still have one on its way after the callback is gone (see ConnectionWrap::Close).
  bool domainEventsEverRegistered() const { return domainEventsEverRegistered_; }

  // After close(): no registration is left, nothing more is delivered.
  void Shutdown();

 private:
  void UpdateHold();

  Napi::Env env_;
  std::shared_ptr<EventSink> sink_;
  ChannelContext* context_;  // owned by the thread-safe function (freed by its finalizer)
  int active_ = 0;
  bool holding_ = false;
  std::vector<int> domainCallbackIds_;
  bool closeCallbackRegistered_ = false;
  bool domainEventsEverRegistered_ = false;
};

// The libvirt callback for `eventId` (a VIR_DOMAIN_EVENT_ID_*), or null when this
// build does not deliver that event kind.
virConnectDomainEventGenericCallback DomainEventCallbackFor(int eventId);

// For virConnectRegisterCloseCallback.
void OnConnectionClosed(virConnectPtr conn, int reason, void* opaque);

// libvirt's free callback; also used when a registration failed.
void FreeEventRegistration(void* opaque);

}  // namespace lvb
