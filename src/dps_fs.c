/***
 * The file system: what the library and the `dps` command need to know
 * about local files (a key file's mode), private reads and atomic writes
 * (the assignment cache).
 * @module dps.core
 */
/*
 * 64-bit file offsets and inode numbers on 32-bit targets too (mipsel,
 * armhf): without them glibc's readdir() fails with EOVERFLOW as soon as an
 * entry's d_off or d_ino needs more than 32 bits (ext4's hashed directory
 * offsets, XFS/btrfs inode numbers, any 32-bit program under qemu-user on a
 * 64-bit kernel), and stat() does the same for large inodes or files.  Must
 * come before the first system header.
 */
#define _FILE_OFFSET_BITS 64

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "dps_aux.h"
#include "dps_core.h"

/* fails to compile where the definition above came too late to take effect */
typedef char dps_fs_needs_64_bit_offsets[sizeof(off_t) == 8 ? 1 : -1];

/* The system's reason for err (never empty). */
static void reason_of(int err, char reason[128])
{
    if (strerror_r(err, reason, 128) != 0 || reason[0] == '\0')
        snprintf(reason, 128, "error %d", err);
    reason[127] = '\0';
}

/* Argument 1 as a path; raises naming dps.core.WHO. */
static const char *check_path(lua_State *L, const char *who, size_t *len)
{
    const char *path;

    if (lua_type(L, 1) != LUA_TSTRING)
        luaL_error(L, "dps.core.%s: path must be a string, got %s", who, luaL_typename(L, 1));
    path = lua_tolstring(L, 1, len);
    if (*len == 0)
        luaL_error(L, "dps.core.%s: path must not be empty", who);
    if (strlen(path) != *len)
        luaL_error(L, "dps.core.%s: path must not contain NUL bytes", who);
    return path;
}

/***
 * Facts about a file, following symbolic links (like `stat(2)`, `ls -lL`).
 * @function stat
 * @tparam string path
 * @treturn table `{ mode = n, type = "file" | "directory" | "other", size = n, uid = n }`:
 * `mode` holds the permission bits only (`0600` is 384), `uid` the owner
 * @return nil, message, `{ kind = "config" }` when the file cannot be looked up
 * (the message names the path and the system's reason; it never holds the
 * file's contents)
 * @raise when `path` is not a string, is empty or holds a NUL byte
 */
static int fs_stat(lua_State *L)
{
    size_t len;
    const char *path = check_path(L, "stat", &len);
    struct stat st;
    char reason[128];

    if (stat(path, &st) != 0) {
        reason_of(errno, reason);
        lua_pushfstring(L, "%s: %s", path, reason);
        return dps_push_failure(L, "config", lua_tostring(L, -1));
    }
    lua_createtable(L, 0, 4);
    dps_set_integer(L, "mode", (lua_Integer)(st.st_mode & 07777));
    dps_set_string(L, "type", S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
    dps_set_integer(L, "size", (lua_Integer)st.st_size);
    dps_set_integer(L, "uid", (lua_Integer)st.st_uid);
    return 1;
}

/* Longest path write_atomic takes (the temporary name adds a few bytes). */
#define FS_MAX_PATH 4000
/* The temporary file of "dir/name": "dir/.name.XXXXXX" (mkstemp's pattern). */
#define FS_TMP_SUFFIX_LEN 6

/* Splits path (at most FS_MAX_PATH bytes) into its folder (".", "/" or
 * "dir", into dir) and base name. */
static const char *split_path(const char *path, char dir[FS_MAX_PATH + 1])
{
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);

    memcpy(dir, n > 0 ? path : ".", n > 0 ? n : 1);
    dir[n > 0 ? n : 1] = '\0';
    return slash != NULL ? slash + 1 : path;
}

/*
 * Locks: every writer holds flock(LOCK_EX) on its own temporary file from
 * just after creating it until after the rename, so a temporary that nobody
 * holds is stale (its writer died: the kernel drops the lock with the
 * process) and one that somebody holds is a live write, left alone.
 * flock, not fcntl: a POSIX lock is dropped when the process closes any
 * descriptor of the file, which a library cannot promise; flock belongs to
 * the open file description.  No lock file: nothing stays beside the target,
 * and a temporary's mode (0600) keeps other users from holding its lock.
 * On a file system without flock (NFS, some FUSE) nothing is locked and
 * nothing is reaped: no writer loses its temporary.
 */

/* Whether n is one of mkstemp's temporaries of base: ".base.XXXXXX", the
 * last six letters or digits (so that no ".base.lock"-like name matches). */
static int is_temporary(const char *n, const char *base, size_t blen)
{
    return n[0] == '.' && strncmp(n + 1, base, blen) == 0 && n[1 + blen] == '.'
        && strlen(n) == blen + 2 + FS_TMP_SUFFIX_LEN
        && strspn(n + blen + 2, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") == FS_TMP_SUFFIX_LEN;
}

/*
 * Removes the stale temporary files of "dir/base" (writes that were killed):
 * those whose lock can be taken, and that still have that name once it is
 * taken.  One that cannot be opened (a symbolic link, another user's) is
 * left; open never blocks (O_NONBLOCK: a FIFO planted under that name).
 */
static void remove_stale(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat held, named;
    size_t blen = strlen(base);
    char victim[FS_MAX_PATH + 64];
    int fd;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (!is_temporary(e->d_name, base, blen)
            || snprintf(victim, sizeof victim, "%s/%s", dir, e->d_name) >= (int)sizeof victim)
            continue;
        fd = open(victim, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &held) == 0 && lstat(victim, &named) == 0
            && held.st_dev == named.st_dev && held.st_ino == named.st_ino)
            (void)unlink(victim);
        (void)close(fd); /* drops the lock */
    }
    closedir(d);
}

/*
 * Creates tmp (mkstemp's template, rewritten) and takes its lock.  A
 * stale-temporary sweep of another writer may take the lock first, in the
 * instant between mkstemp and flock, and remove the file: then the file
 * has no name left (st_nlink 0) and a new one is made.  Returns the
 * descriptor, or -1 with errno set.
 */
static int create_locked(char *tmp, size_t tlen)
{
    struct stat st;
    int fd, tries;

    for (tries = 0; tries < 5; tries++) {
        memcpy(tmp + tlen - FS_TMP_SUFFIX_LEN, "XXXXXX", FS_TMP_SUFFIX_LEN);
        fd = mkstemp(tmp); /* 0600 */
        if (fd < 0)
            return -1;
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* the only descriptor flag there is */
        while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
            ;
        if (fstat(fd, &st) != 0 || st.st_nlink > 0)
            return fd; /* held, or a file system without locks (no sweep either) */
        (void)close(fd);
    }
    errno = EAGAIN;
    return -1;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fs_failure(lua_State *L, const char *what, const char *path, int err)
{
    char reason[128];

    reason_of(err, reason);
    lua_pushfstring(L, "%s %s: %s", what, path, reason);
    return dps_push_failure(L, "config", lua_tostring(L, -1));
}

/***
 * Replace a file's contents atomically and durably: a temporary file
 * (mode 0600) in the same folder, `fsync`, `rename` onto `path`, `fsync` of
 * the folder. A power cut or `kill -9` at any instant leaves the old file or
 * the new one, never a mix. Each write holds an exclusive `flock` on its
 * temporary file (`.NAME.XXXXXX` beside `path`) until it is renamed, so
 * writers in several processes never disturb each other (the last rename
 * wins, whole); temporary files nobody holds are left by writes that were
 * killed, and are removed first.
 * The new file is mode 0600 whatever the old one was.
 * @function write_atomic
 * @tparam string path
 * @tparam string contents
 * @treturn boolean true
 * @return nil, message, `{ kind = "config" }` when it cannot be written (the
 * message names the path, the step and the system's reason, never the
 * contents); the old file is then left as it was
 * @raise when `path` is not a string, is empty, ends in `/`, holds a NUL
 * byte or is longer than 4000 bytes, or `contents` is not a string
 */
static int fs_write_atomic(lua_State *L)
{
    size_t len, dlen;
    const char *path, *data, *base, *failed = "cannot write a temporary file beside";
    char dir[FS_MAX_PATH + 1];
    char tmp[FS_MAX_PATH + 16];
    int fd, err, tlen;

    path = check_path(L, "write_atomic", &len);
    if (lua_type(L, 2) != LUA_TSTRING)
        return luaL_error(L, "dps.core.write_atomic: contents must be a string, got %s", luaL_typename(L, 2));
    data = lua_tolstring(L, 2, &dlen);
    if (path[len - 1] == '/')
        return luaL_error(L, "dps.core.write_atomic: path must name a file");
    if (len > FS_MAX_PATH)
        return luaL_error(L, "dps.core.write_atomic: path is longer than %d bytes", FS_MAX_PATH);
    base = split_path(path, dir);
    tlen = snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, base); /* fits: FS_MAX_PATH + 10 at most */

    remove_stale(dir, base);
    fd = create_locked(tmp, (size_t)tlen);
    if (fd < 0)
        return fs_failure(L, "cannot create a temporary file beside", path, errno);
    err = fchmod(fd, 0600) == 0 && write_all(fd, data, dlen) == 0 && fsync(fd) == 0 ? 0 : errno;
    if (err == 0 && rename(tmp, path) != 0) {
        err = errno;
        failed = "cannot rename a temporary file onto";
    }
    if (err != 0)
        (void)unlink(tmp); /* still locked: no sweep can have taken the name */
    (void)close(fd); /* after the rename: drops the lock; the data is synced */
    if (err != 0)
        return fs_failure(L, failed, path, err);
    /* the rename itself must reach the disk: fsync the folder */
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        err = errno;
        if (fd >= 0)
            (void)close(fd);
        return fs_failure(L, "cannot sync the folder of", path, err);
    }
    (void)close(fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* Largest max_bytes read_private takes (it reserves that much at once). */
#define FS_READ_LIMIT 16777216

/* A file's type in words, for one that is not a regular file. */
static const char *type_name(mode_t mode)
{
    return S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO" : S_ISSOCK(mode) ? "a socket"
        : S_ISCHR(mode) ? "a character device" : S_ISBLK(mode) ? "a block device" : "of another type";
}

/***
 * The contents of a file only this user can have written: opened without
 * following a symbolic link and without blocking (a FIFO), then checked on
 * the open descriptor (`fstat`), so that nothing swapped in after a check
 * is read. The file must be a regular file, owned by the effective user
 * (root's files for root: another user's file is refused even for root),
 * with no permission bits for group or others (`0600`, `0400`), and at most
 * `max_bytes` long. For the assignment cache (`dps.cache.load`).
 * @function read_private
 * @tparam string path
 * @tparam integer max_bytes 0 to 16777216 (reserved at once: keep it small)
 * @treturn string the contents
 * @return nil, reason, `{ kind = "config" }` when it is not read; the reason
 * is plain words without the path (`"a symbolic link"`, `"not a regular file
 * (a FIFO)"`, `"owned by uid 65534, not this user (0)"`, `"readable or
 * writable by group or others (mode 0644)"`, `"larger than 65536 bytes"`, or
 * the system's reason: `"No such file or directory"`); `missing` in the
 * table is true when there is no such file (or folder), else false
 * @raise when `path` is not a string, is empty or holds a NUL byte, or
 * `max_bytes` is not a whole number from 0 to 16777216
 */
static int fs_read_private(lua_State *L)
{
    size_t len, max, got = 0;
    const char *path = check_path(L, "read_private", &len);
    int numeric = lua_type(L, 2) == LUA_TNUMBER, fd, err = 0;
    lua_Number n = lua_tonumber(L, 2);
    unsigned long me = (unsigned long)geteuid();
    struct stat st;
    char why[128], *buf;
    ssize_t r = 0;

    if (!numeric || !(n >= 0 && n <= FS_READ_LIMIT) || (lua_Number)(long)n != n)
        return luaL_error(L, "dps.core.read_private: max_bytes must be a whole number from 0 to %d, got %s",
            FS_READ_LIMIT, numeric ? lua_tostring(L, 2) : luaL_typename(L, 2));
    max = (size_t)(long)n;
    buf = dps_newuserdata(L, max + 1); /* before the descriptor: raising then leaks nothing */

    why[0] = '\0';
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0)
        err = errno;
    else if (!S_ISREG(st.st_mode))
        snprintf(why, sizeof why, "not a regular file (%s)", type_name(st.st_mode));
    else if (st.st_uid != me)
        snprintf(why, sizeof why, "owned by uid %lu, not this user (%lu)", (unsigned long)st.st_uid, me);
    else if ((st.st_mode & 077) != 0)
        snprintf(why, sizeof why, "%s by group or others (mode %04o)",
            (st.st_mode & 066) != 0 ? "readable or writable" : "executable", (unsigned)(st.st_mode & 07777));
    else {
        if ((unsigned long long)st.st_size > max)
            got = max + 1;
        while (got <= max && ((r = read(fd, buf + got, max + 1 - got)) > 0 || (r < 0 && errno == EINTR)))
            got += r > 0 ? (size_t)r : 0;
        if (r < 0)
            err = errno;
        else if (got > max) /* by fstat, or grown since */
            snprintf(why, sizeof why, "larger than %lu bytes", (unsigned long)max);
    }
    if (fd >= 0)
        (void)close(fd);
    if (err == ELOOP && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
        strcpy(why, "a symbolic link");
    else if (err != 0)
        reason_of(err, why);
    if (why[0] == '\0') {
        lua_pushlstring(L, buf, got);
        return 1;
    }
    dps_push_failure(L, "config", why);
    lua_pushboolean(L, err == ENOENT);
    lua_setfield(L, -2, "missing");
    return 3;
}

/* The functions this file adds to dps.core. */
static const luaL_Reg fs_functions[] = {
    {"stat", fs_stat},
    {"write_atomic", fs_write_atomic},
    {"read_private", fs_read_private},
    {NULL, NULL},
};

void dps_open_fs(lua_State *L)
{
    luaL_setfuncs(L, fs_functions, 0);
}
