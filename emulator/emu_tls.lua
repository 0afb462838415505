-- TLS for the DPS emulator: one server context per listener.
--
-- The service asks every client for a certificate but does not require one,
-- and answers a certificate it does not trust with 401 / 401002, not with a
-- TLS alert. So the emulator must request a client certificate, let OpenSSL
-- accept any, and judge it in the request handler (emu_auth). luaossl offers
-- neither a verify callback nor SSL_CTX_set_session_id_context (without which
-- OpenSSL aborts every resumed session once peer verification is on), so under
-- LuaJIT both are set through the FFI. Under PUC Lua no client certificate is
-- requested at all: X.509 attestation then needs LuaJIT.
local http_tls = require "http.tls"
local ssl_context = require "openssl.ssl.context"

local M = {}

local SID_CTX = "dps-emulator"
local lib, accept_any -- loaded once; accept_any must stay referenced

local function ffi_setup()
	local ok_ffi, ffi = pcall(require, "ffi")
	if not ok_ffi then return nil end
	if lib then return ffi end
	if not pcall(ffi.typeof, "SSL_CTX*") then
		ffi.cdef "typedef struct ssl_ctx_st SSL_CTX;"
	end
	ffi.cdef [[
		typedef struct x509_store_ctx_st dps_emu_X509_STORE_CTX;
		typedef int (*dps_emu_verify_cb)(int, dps_emu_X509_STORE_CTX *);
		void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, dps_emu_verify_cb cb);
		int SSL_CTX_set_session_id_context(SSL_CTX *ctx, const unsigned char *sid, unsigned int len);
		typedef struct ssl_st dps_emu_SSL;
		int SSL_session_reused(const dps_emu_SSL *ssl);
	]]
	local ok_lib, l = pcall(ffi.load, "libssl.so.3")
	if not ok_lib then
		ok_lib, l = pcall(ffi.load, "ssl")
		if not ok_lib then return nil end
	end
	lib = l
	-- The callback runs inside SSL_accept, which cqueues calls from a classic
	-- C function, never from an FFI call a trace made: the JIT stays on (it
	-- was off for the whole emulator once, which cost a third of its CPU);
	-- only the callback itself is never compiled.
	local function accept(_, _) return 1 end
	require("jit").off(accept)
	accept_any = ffi.cast("dps_emu_verify_cb", accept)
	return ffi
end

--- Build the server context of one listener from x509 `cert` and pkey `key`.
-- Returns ctx and the client-certificate mode: "handler" (requested, any
-- accepted, judged per request) or "off" (not requested).
function M.server_context(cert, key)
	local ctx = http_tls.new_server_context()
	assert(ctx:setCertificate(cert))
	assert(ctx:setPrivateKey(key))
	local ffi = ffi_setup()
	if not ffi then
		ctx:setVerify(ssl_context.VERIFY_NONE)
		return ctx, "off"
	end
	-- a luaossl context userdata holds the SSL_CTX pointer
	local p = ffi.cast("SSL_CTX**", ctx)[0]
	if lib.SSL_CTX_set_session_id_context(p, SID_CTX, #SID_CTX) ~= 1 then
		error("SSL_CTX_set_session_id_context failed")
	end
	lib.SSL_CTX_set_verify(p, ssl_context.VERIFY_PEER, accept_any)
	return ctx, "handler"
end

--- Whether the handshake of a luaossl ssl object resumed a session (nil
-- when it cannot tell: no FFI, as under PUC Lua).
function M.session_reused(ssl)
	local ffi = ffi_setup()
	if not ffi then return nil end
	return lib.SSL_session_reused(ffi.cast("dps_emu_SSL**", ssl)[0]) == 1
end

return M
