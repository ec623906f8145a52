/*
 * mcfs-watchdog PID CONNECTION: a daemon killed while the kernel holds one of its threads in its own
 * FUSE connection never finishes dying: the kernel takes a directory's lock to drop a name in it (a
 * notification), a request holding that lock waits for the daemon's answer, and the answer never
 * comes while the dying process keeps /dev/fuse open (its last thread is the one held). The mount
 * hangs for good. The daemon starts this small program at its mount (a process of its own: a fork
 * would pin a copy of the daemon's memory); once the daemon's main thread is gone while the process
 * lingers, it aborts the connection (fusectl): the held request fails, the thread goes, the daemon
 * dies, and whatever supervises it can start it again. It ends with the daemon.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

/* How long the daemon's main thread may be gone with the process still there before the abort. */
#define LINGER_MS 500
#define POLL_MS 100

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

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	pid_t daemon = (pid_t)atol(argv[1]);
	long conn = atol(argv[2]);
	prctl(PR_SET_NAME, "mcfs-watchdog", 0, 0, 0);
	/* An interrupt meant for the daemon's terminal is the daemon's to act on. */
	signal(SIGINT, SIG_IGN);
	char stat_path[64], abort_path[80];
	snprintf(stat_path, sizeof stat_path, "/proc/%ld/stat", (long)daemon);
	snprintf(abort_path, sizeof abort_path, "/sys/fs/fuse/connections/%ld/abort", conn);
	int gone_ms = 0;
	for (;;) {
		if (getppid() != daemon)
			return 0;
		char s = state_of(stat_path);
		if (s == 0)
			return 0;
		gone_ms = s == 'Z' ? gone_ms + POLL_MS : 0;
		if (gone_ms >= LINGER_MS) {
			int fd = open(abort_path, O_WRONLY | O_CLOEXEC);
			if (fd >= 0) {
				if (write(fd, "1", 1) != 1)
					perror(abort_path);
				close(fd);
			}
			return 0;
		}
		struct timespec t = { 0, POLL_MS * 1000000L };
		nanosleep(&t, NULL);
	}
}
