// A TCP proxy on 127.0.0.1 that holds every chunk for a fixed delay in each
// direction: a hypervisor a millisecond or two away, on a kernel without netem.
//   delaying-proxy TARGET_PORT DELAY_MS
// prints the port it listens on, then serves until killed.
//
// Why C and not a Node script: libuv's timers count whole milliseconds, so a
// proxy on Node's loop delays a chunk by 1 to 2.5 ms depending on when it
// arrives, and the more traffic, the more chunks wait an extra millisecond: a
// link that slows down as calls overlap, which is not the link being modelled.
// Here one epoll loop and an absolute timerfd deadline hold each chunk for the
// delay to within the machine's wake-up latency, and the proxy's own CPU stays
// small beside the daemon's and the clients' on the same cores.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_BYTES 65536
#define MAX_EVENTS 64

struct chunk {
  struct chunk* next;
  uint64_t due;
  size_t length, sent;
  char data[];
};

// One direction of a proxied connection (see struct pair for its sockets).
struct line {
  struct chunk *head, *tail;
  int ended;     // its reading socket has closed; the writing one is shut down once the queue drains
  int shutDown;  // done
};

struct pair;

// What an epoll event points at: one socket of a pair.
struct endpoint {
  struct pair* pair;
  int fd;
};

// Line i reads from ends[i] and writes to ends[1 - i].
struct pair {
  struct line lines[2];     // client to target, target to client
  struct endpoint ends[2];  // the client's socket, the target's
  struct pair *next, *prev;
  int closed;
};

static int epollFd, timerFd;
static uint64_t delayNs;
static struct pair* pairs;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char* what) {
  perror(what);
  exit(1);
}

static void close_pair(struct pair* pair) {
  if (pair->closed) return;
  pair->closed = 1;
  close(pair->ends[0].fd);
  close(pair->ends[1].fd);
  for (int i = 0; i < 2; i++) {
    while (pair->lines[i].head != NULL) {
      struct chunk* c = pair->lines[i].head;
      pair->lines[i].head = c->next;
      free(c);
    }
  }
  // Freed after the event batch (an endpoint may still be referenced in it).
}

// Which events the socket `end` (0 or 1) of `pair` waits for now: reading for the line
// it feeds, writing room for a chunk half written into it.
static void watch(struct pair* pair, int end) {
  const struct line* reads = &pair->lines[end];
  const struct line* writes = &pair->lines[1 - end];
  uint32_t events = 0;
  if (!reads->ended) events |= EPOLLIN;
  if (writes->head != NULL && writes->head->sent > 0) events |= EPOLLOUT;
  struct epoll_event event = {.events = events, .data.ptr = &pair->ends[end]};
  epoll_ctl(epollFd, EPOLL_CTL_MOD, pair->ends[end].fd, &event);
}

// Writes the chunks of line `i` that are due; returns the next one's due time (0: none waits).
static uint64_t flush_line(struct pair* pair, int i, uint64_t now) {
  struct line* l = &pair->lines[i];
  while (l->head != NULL && l->head->due <= now) {
    struct chunk* c = l->head;
    ssize_t n = write(pair->ends[1 - i].fd, c->data + c->sent, c->length - c->sent);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) n = 0;
    if (n < 0) {
      close_pair(pair);
      return 0;
    }
    c->sent += (size_t)n;
    if (c->sent < c->length) {
      watch(pair, 1 - i);
      return 0;  // EPOLLOUT brings it back
    }
    l->head = c->next;
    if (l->head == NULL) l->tail = NULL;
    free(c);
  }
  if (l->head == NULL && l->ended && !l->shutDown) {
    shutdown(pair->ends[1 - i].fd, SHUT_WR);
    l->shutDown = 1;
    if (pair->lines[0].shutDown && pair->lines[1].shutDown) close_pair(pair);
  }
  return l->head != NULL && l->head->sent == 0 ? l->head->due : 0;
}

static void read_line(struct pair* pair, int i) {
  struct line* l = &pair->lines[i];
  struct chunk* c = malloc(sizeof(struct chunk) + CHUNK_BYTES);
  if (c == NULL) die("malloc");
  ssize_t n = read(pair->ends[i].fd, c->data, CHUNK_BYTES);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    free(c);
    return;
  }
  if (n < 0) {
    free(c);
    close_pair(pair);
    return;
  }
  if (n == 0) {
    free(c);
    l->ended = 1;
    watch(pair, i);
    return;
  }
  c->next = NULL;
  c->due = now_ns() + delayNs;
  c->length = (size_t)n;
  c->sent = 0;
  if (l->tail != NULL) {
    l->tail->next = c;
  } else {
    l->head = c;
  }
  l->tail = c;
}

static void accept_client(int listener, int targetPort) {
  int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (client < 0) return;
  int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((uint16_t)targetPort)};
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (upstream < 0 || connect(upstream, (struct sockaddr*)&target, sizeof target) < 0) {
    close(client);
    if (upstream >= 0) close(upstream);
    return;
  }
  int one = 1;
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (fcntl(upstream, F_SETFL, O_NONBLOCK) < 0) die("fcntl");
  struct pair* pair = calloc(1, sizeof *pair);
  if (pair == NULL) die("calloc");
  pair->ends[0] = (struct endpoint){pair, client};
  pair->ends[1] = (struct endpoint){pair, upstream};
  for (int i = 0; i < 2; i++) {
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = &pair->ends[i]};
    if (epoll_ctl(epollFd, EPOLL_CTL_ADD, pair->ends[i].fd, &event) < 0) die("epoll_ctl");
  }
  pair->next = pairs;
  if (pairs != NULL) pairs->prev = pair;
  pairs = pair;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: delaying-proxy TARGET_PORT DELAY_MS\n");
    return 2;
  }
  int targetPort = atoi(argv[1]);
  double delayMs = atof(argv[2]);
  if (targetPort <= 0 || targetPort > 65535 || !(delayMs >= 0)) {
    fprintf(stderr, "usage: delaying-proxy TARGET_PORT DELAY_MS\n");
    return 2;
  }
  delayNs = (uint64_t)(delayMs * 1e6);

  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (listener < 0 || bind(listener, (struct sockaddr*)&address, sizeof address) < 0 || listen(listener, 64) < 0 ||
      getsockname(listener, (struct sockaddr*)&address, &length) < 0) {
    die("listen");
  }
  epollFd = epoll_create1(EPOLL_CLOEXEC);
  timerFd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (epollFd < 0 || timerFd < 0) die("epoll/timerfd");
  static int listenerTag, timerTag;
  struct epoll_event event = {.events = EPOLLIN, .data.ptr = &listenerTag};
  epoll_ctl(epollFd, EPOLL_CTL_ADD, listener, &event);
  event.data.ptr = &timerTag;
  epoll_ctl(epollFd, EPOLL_CTL_ADD, timerFd, &event);
  printf("%d\n", ntohs(address.sin_port));
  fflush(stdout);

  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int ready = epoll_wait(epollFd, events, MAX_EVENTS, -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) die("epoll_wait");
    for (int i = 0; i < ready; i++) {
      void* tag = events[i].data.ptr;
      if (tag == &listenerTag) {
        accept_client(listener, targetPort);
      } else if (tag == &timerTag) {
        uint64_t expirations;
        ssize_t ignored = read(timerFd, &expirations, sizeof expirations);
        (void)ignored;
      } else {
        struct endpoint* endpoint = tag;
        struct pair* pair = endpoint->pair;
        if (pair->closed) continue;
        if (events[i].events & (EPOLLERR | EPOLLHUP) && !(events[i].events & EPOLLIN)) {
          close_pair(pair);
          continue;
        }
        // EPOLLOUT needs nothing here: the flush below sends the rest of a half-written chunk.
        int end = (int)(endpoint - pair->ends);
        if (events[i].events & (EPOLLIN | EPOLLHUP)) read_line(pair, end);
        if (!pair->closed) watch(pair, end);
      }
    }
    // Send what is due, free what closed, and sleep until the next chunk is due.
    uint64_t now = now_ns(), next = 0;
    for (struct pair* pair = pairs; pair != NULL;) {
      struct pair* following = pair->next;
      for (int l = 0; l < 2 && !pair->closed; l++) {
        uint64_t due = flush_line(pair, l, now);
        if (due != 0 && (next == 0 || due < next)) next = due;
      }
      if (pair->closed) {
        if (pair->prev != NULL) pair->prev->next = pair->next;
        if (pair->next != NULL) pair->next->prev = pair->prev;
        if (pairs == pair) pairs = pair->next;
        free(pair);
      }
      pair = following;
    }
    struct itimerspec deadline = {0};
    if (next != 0) {
      deadline.it_value.tv_sec = (time_t)(next / 1000000000u);
      deadline.it_value.tv_nsec = (long)(next % 1000000000u);
    }
    timerfd_settime(timerFd, TFD_TIMER_ABSTIME, &deadline, NULL);
  }
}
