/***
 * The file system: what the library and the `dps` command need to know
 * about local files (a key file's mode), and atomic writes (the assignment
 * cache).
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
 * Removes the temporary files an interrupted write_atomic of the same path
 * left behind: ".name.XXXXXX" in the folder.  A writer that is still busy
 * loses its temporary file and fails at rename; the target is never touched.
 */
static void remove_stale(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t blen = strlen(base);
    char victim[FS_MAX_PATH + 64];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (n[0] == '.' && strncmp(n + 1, base, blen) == 0 && n[1 + blen] == '.'
            && strlen(n) == blen + 2 + FS_TMP_SUFFIX_LEN
            && snprintf(victim, sizeof victim, "%s/%s", dir, n) < (int)sizeof victim)
            (void)unlink(victim);
    }
    closedir(d);
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
 * the new one, never a mix. Temporary files that an interrupted write of the
 * same path left behind (`.NAME.XXXXXX` beside it) are removed first.
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
    int fd, err;

    path = check_path(L, "write_atomic", &len);
    if (lua_type(L, 2) != LUA_TSTRING)
        return luaL_error(L, "dps.core.write_atomic: contents must be a string, got %s", luaL_typename(L, 2));
    data = lua_tolstring(L, 2, &dlen);
    if (path[len - 1] == '/')
        return luaL_error(L, "dps.core.write_atomic: path must name a file");
    if (len > FS_MAX_PATH)
        return luaL_error(L, "dps.core.write_atomic: path is longer than %d bytes", FS_MAX_PATH);
    base = split_path(path, dir);
    snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, base); /* fits: FS_MAX_PATH + 10 at most */

    remove_stale(dir, base);
    fd = mkstemp(tmp); /* 0600 */
    if (fd < 0)
        return fs_failure(L, "cannot create a temporary file beside", path, errno);
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* the only descriptor flag there is */
    err = fchmod(fd, 0600) == 0 && write_all(fd, data, dlen) == 0 && fsync(fd) == 0 ? 0 : errno;
    if (close(fd) != 0 && err == 0)
        err = errno;
    if (err == 0 && rename(tmp, path) != 0) {
        err = errno;
        failed = "cannot rename a temporary file onto";
    }
    if (err != 0) {
        (void)unlink(tmp);
        return fs_failure(L, failed, path, err);
    }
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

/* The functions this file adds to dps.core. */
static const luaL_Reg fs_functions[] = {
    {"stat", fs_stat},
    {"write_atomic", fs_write_atomic},
    {NULL, NULL},
};

void dps_open_fs(lua_State *L)
{
    luaL_setfuncs(L, fs_functions, 0);
}
