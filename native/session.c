/*
 * The session's life: mount and start the loop thread (mcfs_start), tell JS whether it still runs, and
 * stop it (mcfs_stop) without ever hanging the process, since unmounting with files open can leave the
 * loop blocked. libfuse's signal handlers are never installed: Bun owns the signals.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

static struct fuse_session *se;
static pthread_t loop_thread;
static int loop_running;
static int single_thread;

static void *loop_main(void *arg)
{
	(void)arg;
	if (single_thread) {
		fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();
		fuse_loop_cfg_set_max_threads(cfg, 16);
		fuse_loop_cfg_set_clone_fd(cfg, 0);
		fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	/* Tell JS the session ended (unmounted from outside or stopped). */
	__atomic_store_n(&loop_running, 0, __ATOMIC_SEQ_CST);
	queue_end();
	return NULL;
}

/*
 * Mount and start the session. opts is a comma list of -o options. debug turns on libfuse's tracing.
 * wake is called (from any thread) when requests wait for mcfs_poll. Returns the read end of the pipe
 * that tells of the session's end, or -errno.
 */
int mcfs_start(const char *mountpoint, const char *opts, int debug, int single, void (*wake)(void))
{
	if (se)
		return -EBUSY;
	/*
	 * The abort file used by mcfs_stop lives in fusectl; mount it if the system has not (EBUSY if it
	 * has, EPERM for a user other than root, who relies on the system's).
	 */
	(void)mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL);
	ids_reset();
	io_reset();
	mcfs_entry_clear();
	grants_reset();
	int wake_r = queue_open(wake);
	if (wake_r < 0)
		return wake_r;
	const char *argv[5];
	int argc = 0;
	argv[argc++] = "mcfs";
	argv[argc++] = "-o";
	argv[argc++] = opts;
	if (debug)
		argv[argc++] = "-d";
	struct fuse_args args = FUSE_ARGS_INIT(argc, (char **)argv);
	se = fuse_session_new(&args, &ll_ops, sizeof ll_ops, NULL);
	if (!se) {
		queue_close();
		return -EINVAL;
	}
	if (fuse_session_mount(se, mountpoint) != 0) {
		fuse_session_destroy(se);
		se = NULL;
		queue_close();
		return -EIO;
	}
	/* Without the hooks the kernel keeps killing privileges itself (and asks before every write). */
	passthrough_reset(fuse_session_fd(se));
	(void)killpriv_install(se);
	single_thread = single;
	(void)notify_start(se);
	loop_running = 1;
	if (pthread_create(&loop_thread, NULL, loop_main, NULL) != 0) {
		notify_stop();
		queue_close();
		fuse_session_unmount(se);
		fuse_session_destroy(se);
		se = NULL;
		return -EAGAIN;
	}
	return wake_r;
}

struct timespec deadline_after(clockid_t clock, int ms)
{
	struct timespec t;
	clock_gettime(clock, &t);
	return time_after(t, ms);
}

struct timespec time_after(struct timespec t, int ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

int mcfs_running(void) { return __atomic_load_n(&loop_running, __ATOMIC_SEQ_CST); }

/*
 * Stop the session, once the caller has lazily unmounted it (umount2 as root, fusermount3 for other
 * users, who may not call umount2): abort the connection (conn is the mount's device minor, -1 if
 * unknown; fusectl gives its abort file to the user who mounted) so loop threads blocked in
 * read(/dev/fuse) return even while files are open, then join the loop thread for at most timeout_ms.
 * Returns 0 when the loop ended, -ETIMEDOUT when it is still stuck.
 */
int mcfs_stop(int conn, int timeout_ms)
{
	if (!se)
		return 0;
	fuse_session_exit(se);
	if (conn >= 0) {
		char path[80];
		snprintf(path, sizeof path, "/sys/fs/fuse/connections/%d/abort", conn);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			(void)!write(fd, "1", 1);
			close(fd);
		}
	}
	struct timespec ts = deadline_after(CLOCK_REALTIME, timeout_ms);
	if (pthread_timedjoin_np(loop_thread, NULL, &ts) != 0)
		return -ETIMEDOUT;
	notify_stop();
	queue_stop_waking();
	/* A reply JS sends later finds no request: it would reach the session freed below (its I/O hooks' table too). */
	ids_fail_all(ENOTCONN);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	se = NULL;
	return 0;
}
