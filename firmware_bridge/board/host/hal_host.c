/*
 * Host target: the board as a POSIX process. It serves the protocol over a
 * TCP socket (one client, 127.0.0.1), a pseudo-terminal or stdin/stdout, and
 * prints one line on stdout telling where it listens:
 *   SINDYRL_BOARD tcp <port>   |   SINDYRL_BOARD pty <path>   |   (nothing for --stdio)
 * Usage: board --tcp PORT (0 picks a free port) | --pty | --stdio
 */
#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../sindyrl_board.h"
#include "../sindyrl_hal.h"

static int in_fd = -1;
static int out_fd = -1;
static uint8_t rbuf[512];
static size_t rlen = 0;
static size_t rpos = 0;

int sindyrl_hal_read_byte(void)
{
    while (rpos >= rlen) {
        ssize_t n = read(in_fd, rbuf, sizeof rbuf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        rlen = (size_t)n;
        rpos = 0;
    }
    return rbuf[rpos++];
}

int sindyrl_hal_write(const uint8_t *data, size_t n)
{
    while (n > 0) {
        ssize_t w = write(out_fd, data, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

uint64_t sindyrl_hal_timer_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint8_t sindyrl_hal_timer_unit(void)
{
    return 1u; /* nanoseconds */
}

void sindyrl_hal_calibration_loop(uint32_t n)
{
    volatile uint32_t k = n;
    while (k > 0) {
        k--;
    }
}

static int serve_tcp(int port)
{
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int cfd;
    if (lfd < 0) {
        perror("socket");
        return 2;
    }
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 1) != 0) {
        perror("bind/listen");
        return 2;
    }
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("SINDYRL_BOARD tcp %d\n", (int)ntohs(addr.sin_port));
    fflush(stdout);
    cfd = accept(lfd, NULL, NULL);
    close(lfd);
    if (cfd < 0) {
        perror("accept");
        return 2;
    }
    /* one small frame per reply: do not let Nagle hold it back */
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    in_fd = out_fd = cfd;
    return sindyrl_board_run();
}

static int serve_pty(void)
{
    struct termios tio;
    int mfd = posix_openpt(O_RDWR | O_NOCTTY);
    int sfd;
    const char *path;
    if (mfd < 0 || grantpt(mfd) != 0 || unlockpt(mfd) != 0 || (path = ptsname(mfd)) == NULL) {
        perror("pty");
        return 2;
    }
    /* keep the slave open in raw mode so the line discipline never echoes or
       rewrites bytes, whoever opens it later */
    sfd = open(path, O_RDWR | O_NOCTTY);
    if (sfd < 0 || tcgetattr(sfd, &tio) != 0) {
        perror("pty slave");
        return 2;
    }
    cfmakeraw(&tio);
    tcsetattr(sfd, TCSANOW, &tio);
    printf("SINDYRL_BOARD pty %s\n", path);
    fflush(stdout);
    in_fd = out_fd = mfd;
    return sindyrl_board_run();
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a closed link is reported by write(), not a signal */
    if (argc == 3 && strcmp(argv[1], "--tcp") == 0) {
        return serve_tcp(atoi(argv[2]));
    }
    if (argc == 2 && strcmp(argv[1], "--pty") == 0) {
        return serve_pty();
    }
    if (argc == 2 && strcmp(argv[1], "--stdio") == 0) {
        in_fd = 0;
        out_fd = 1;
        return sindyrl_board_run();
    }
    fprintf(stderr, "usage: %s --tcp PORT | --pty | --stdio\n", argv[0]);
    return 2;
}
