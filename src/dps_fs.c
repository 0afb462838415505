/***
 * The file system: what the library and the `dps` command need to know
 * about local files (today a key file's mode; atomic writes belong here too).
 * @module dps.core
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "dps_aux.h"
#include "dps_core.h"

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
    const char *path;
    struct stat st;
    char reason[128];

    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "dps.core.stat: path must be a string, got %s", luaL_typename(L, 1));
    path = lua_tolstring(L, 1, &len);
    if (len == 0)
        return luaL_error(L, "dps.core.stat: path must not be empty");
    if (strlen(path) != len)
        return luaL_error(L, "dps.core.stat: path must not contain NUL bytes");
    if (stat(path, &st) != 0) {
        int err = errno;

        if (strerror_r(err, reason, sizeof reason) != 0)
            reason[0] = '\0';
        reason[sizeof reason - 1] = '\0';
        lua_pushfstring(L, "%s: %s", path, reason[0] != '\0' ? reason : "cannot look it up");
        return dps_push_failure(L, "config", lua_tostring(L, -1));
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    lua_setfield(L, -2, "mode");
    if (S_ISREG(st.st_mode))
        lua_pushliteral(L, "file");
    else if (S_ISDIR(st.st_mode))
        lua_pushliteral(L, "directory");
    else
        lua_pushliteral(L, "other");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_uid);
    lua_setfield(L, -2, "uid");
    return 1;
}

void dps_open_fs(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"stat", fs_stat},
        {NULL, NULL}
    };
    luaL_setfuncs(L, functions, 0);
}
