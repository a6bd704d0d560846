/*
 * dblock.c: the one-writer lock of a database file (ARCHITECTURE.md, "One writer per database
 * file"). An exclusive flock() on "<db>-attuned.lock": attuned holds it from before it opens the
 * database until it exits, and `attune rescore` holds it while it rewrites scores offline. The
 * kernel releases it when its holder exits, however it exits, so a crashed daemon leaves no
 * stale lock. The file's text (pid, listen address) only helps `attune rescore` find the daemon;
 * the lock itself is what counts.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common.h"

int dblock_path(const char *db_path, char *out, size_t len)
{
    int n = snprintf(out, len, "%s-attuned.lock", db_path);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int dblock_acquire(const char *db_path, int *fd_out, char *err, size_t err_len)
{
    *fd_out = -1;
    char path[4096 + 16];
    if (dblock_path(db_path, path, sizeof path)) {
        snprintf(err, err_len, "database path too long for its lock file");
        return -1;
    }
    /* flock() works on a descriptor of any access mode: a lock file created by another user
     * that this one may only read can still be locked. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 && (errno == EACCES || errno == EROFS))
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "cannot open lock file %s: %s", path, strerror(errno));
        return -1;
    }
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return 1;
        snprintf(err, err_len, "cannot lock %s: %s", path, strerror(e));
        return -1;
    }
    *fd_out = fd;
    return 0;
}

void dblock_describe(int fd, const char *listen)
{
    char text[512];
    int n = snprintf(text, sizeof text, "pid %ld\nlisten %s\n", (long)getpid(),
                     listen ? listen : "");
    if (n < 0 || (size_t)n >= sizeof text)
        return;
    /* A failure is not an error: the text is a hint, and a read-only descriptor (see
     * dblock_acquire) cannot write it. */
    if (ftruncate(fd, 0) == 0)
        (void)!pwrite(fd, text, (size_t)n, 0);
}

int dblock_read(const char *db_path, char *listen, size_t len, long *pid)
{
    listen[0] = '\0';
    *pid = 0;
    char path[4096 + 16];
    if (dblock_path(db_path, path, sizeof path))
        return -1;
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "pid ", 4) == 0)
            *pid = strtol(line + 4, NULL, 10);
        else if (strncmp(line, "listen ", 7) == 0)
            snprintf(listen, len, "%s", line + 7);
    }
    fclose(f);
    return 0;
}

void dblock_release(int fd)
{
    if (fd < 0)
        return;
    /* Closing the last descriptor of the open file releases the lock; unlocking first makes the
     * release independent of descriptors a child may have inherited. */
    flock(fd, LOCK_UN);
    close(fd);
}
