/*
 * A daemon killed while the kernel holds one of its threads in its own FUSE connection never
 * finishes dying: the kernel takes a directory's lock to drop a name in it (a notification), a
 * request holding that lock waits for this daemon's answer, and the answer never comes while the
 * dying process keeps /dev/fuse open (its last thread is the one held). The mount hangs for good.
 * A child forked here at the start watches the daemon and, once its main thread is gone while the
 * process lingers, aborts the connection (fusectl): the held request fails, the thread goes, the
 * daemon dies, and whatever supervises it can start it again. The child keeps no descriptor of the
 * daemon's (its root's lock, /dev/fuse) and ends with it.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* How long the daemon's main thread may be gone with the process still there before the abort. */
#define LINGER_MS 500
#define POLL_MS 100

/* s followed by the decimal digits of n, at out (async-signal-safe: no stdio in the child). */
static void with_number(char *out, const char *s, long n, const char *tail)
{
	char digits[24];
	int k = 0;
	do {
		digits[k++] = (char)('0' + n % 10);
		n /= 10;
	} while (n > 0);
	while (*s)
		*out++ = *s++;
	while (k > 0)
		*out++ = digits[--k];
	while (*tail)
		*out++ = *tail++;
	*out = 0;
}

/* The state letter of the process's main thread in /proc/<pid>/stat; 0 when there is none. */
static char state_of(const char *stat_path)
{
	char buf[512];
	int fd = open(stat_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	/* "pid (comm) S ...": the name may hold anything, the state follows its last ')'. */
	for (ssize_t i = n - 1; i > 0; i--)
		if (buf[i] == ')' && i + 2 < n)
			return buf[i + 2];
	return 0;
}

/* Fork the watchdog of FUSE connection conn. Returns its pid, or -errno. */
int mcfs_watchdog_start(int conn)
{
	pid_t daemon = getpid();
	pid_t pid = fork();
	if (pid != 0)
		return pid < 0 ? -errno : pid;
	/* The child: one thread, async-signal-safe calls only. */
	syscall(SYS_close_range, 0U, ~0U, 0U);
	prctl(PR_SET_NAME, "mcfs-watchdog", 0, 0, 0);
	/* Its own signals: an interrupt meant for the daemon's terminal is the daemon's to act on. */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	char stat_path[64], abort_path[80];
	with_number(stat_path, "/proc/", daemon, "/stat");
	with_number(abort_path, "/sys/fs/fuse/connections/", conn, "/abort");
	int gone_ms = 0;
	for (;;) {
		if (getppid() != daemon)
			_exit(0);
		char s = state_of(stat_path);
		if (s == 0)
			_exit(0);
		gone_ms = s == 'Z' ? gone_ms + POLL_MS : 0;
		if (gone_ms >= LINGER_MS) {
			int fd = open(abort_path, O_WRONLY | O_CLOEXEC);
			if (fd >= 0) {
				ssize_t w = write(fd, "1", 1);
				(void)w;
				close(fd);
			}
			_exit(0);
		}
		struct timespec t = { 0, POLL_MS * 1000000L };
		nanosleep(&t, NULL);
	}
}
