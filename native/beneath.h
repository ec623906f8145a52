/*
 * What native/beneath.c exports that native/beneath-pool.c runs on its threads (the rest is reached
 * from JS only, through bun:ffi); included by both, so the compiler holds the two to one signature.
 */
#ifndef MCFS_BENEATH_H
#define MCFS_BENEATH_H
#include <stdint.h>

int mcfs_open_regular_beneath(int root, const char *rel, int flags, int mode);
int mcfs_unlinkat_beneath(int root, const char *rel, int flags);
int mcfs_keep_fd(int fd, uint32_t uid, uint32_t gid, int mode, const char *mark_name, const char *mark);

#endif
