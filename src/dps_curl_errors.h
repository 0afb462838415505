/*
 * dps_curl_errors.h - the CURLcodes the session names, each with its
 * failure kind: one X-macro list, in the manner of Lua-cURLv3's lcerr_easy.h.
 * Include it after defining
 *
 *   DPS_CURLE(NAME, KIND)
 *
 * NAME is the code without its CURLE_ prefix (mnemonics matter: OpenWrt's
 * libcurl has no verbose error strings).  KIND is a failure kind (lower
 * case) or a rule (upper case) that dps_http_failure.c settles from the
 * transfer's state:
 *   DIAL       connect, or proxy when a proxy is dialled instead
 *   HANDSHAKE  tls, or network when the connection was reset or closed
 *   WRITE      too_large when a limit stopped the transfer, else oom
 *   SCHEME     config (the URL's scheme), or protocol (an HTTP/0.9 reply)
 *   SEND       credentials (a TLS 1.3 "certificate required" alert), else network
 *   RECV       SEND's cases, plus proxy (a refused CONNECT) and protocol
 *              (bad chunked framing)
 * A code that is not listed is "network" and is named "CURLE".  Codes newer
 * than libcurl 7.32 carry the version that brought them.
 */
DPS_CURLE(UNSUPPORTED_PROTOCOL, SCHEME)
DPS_CURLE(FAILED_INIT, config)
DPS_CURLE(URL_MALFORMAT, config)
DPS_CURLE(NOT_BUILT_IN, config)
DPS_CURLE(COULDNT_RESOLVE_PROXY, proxy)
DPS_CURLE(COULDNT_RESOLVE_HOST, resolve)
DPS_CURLE(COULDNT_CONNECT, DIAL)
#if LIBCURL_VERSION_NUM >= 0x073300 /* 7.51.0 */
DPS_CURLE(WEIRD_SERVER_REPLY, protocol)
#endif
#if LIBCURL_VERSION_NUM >= 0x072600 /* 7.38.0 */
DPS_CURLE(HTTP2, protocol)
#endif
DPS_CURLE(PARTIAL_FILE, protocol)
DPS_CURLE(WRITE_ERROR, WRITE)
DPS_CURLE(READ_ERROR, network)
DPS_CURLE(OUT_OF_MEMORY, oom)
DPS_CURLE(OPERATION_TIMEDOUT, timeout)
DPS_CURLE(SSL_CONNECT_ERROR, HANDSHAKE)
DPS_CURLE(BAD_FUNCTION_ARGUMENT, config)
DPS_CURLE(INTERFACE_FAILED, DIAL)
DPS_CURLE(TOO_MANY_REDIRECTS, network)
DPS_CURLE(UNKNOWN_OPTION, config)
DPS_CURLE(GOT_NOTHING, network)
DPS_CURLE(SSL_ENGINE_NOTFOUND, credentials)
DPS_CURLE(SSL_ENGINE_SETFAILED, credentials)
DPS_CURLE(SEND_ERROR, SEND)
DPS_CURLE(RECV_ERROR, RECV)
DPS_CURLE(SSL_CERTPROBLEM, credentials)
DPS_CURLE(SSL_CIPHER, tls)
DPS_CURLE(PEER_FAILED_VERIFICATION, tls)
DPS_CURLE(BAD_CONTENT_ENCODING, protocol)
DPS_CURLE(FILESIZE_EXCEEDED, too_large)
DPS_CURLE(USE_SSL_FAILED, tls)
DPS_CURLE(SEND_FAIL_REWIND, network)
DPS_CURLE(SSL_ENGINE_INITFAILED, credentials)
DPS_CURLE(SSL_CACERT_BADFILE, tls)
DPS_CURLE(SSL_SHUTDOWN_FAILED, tls)
DPS_CURLE(AGAIN, network)
DPS_CURLE(SSL_CRL_BADFILE, tls)
DPS_CURLE(SSL_ISSUER_ERROR, tls)
#if LIBCURL_VERSION_NUM >= 0x072700 /* 7.39.0 */
DPS_CURLE(SSL_PINNEDPUBKEYNOTMATCH, tls)
#endif
#if LIBCURL_VERSION_NUM >= 0x072900 /* 7.41.0 */
DPS_CURLE(SSL_INVALIDCERTSTATUS, tls)
#endif
#if LIBCURL_VERSION_NUM >= 0x073100 /* 7.49.0 */
DPS_CURLE(HTTP2_STREAM, protocol)
#endif
#if LIBCURL_VERSION_NUM >= 0x073b00 /* 7.59.0 */
DPS_CURLE(RECURSIVE_API_CALL, config)
#endif
#if LIBCURL_VERSION_NUM >= 0x074400 /* 7.68.0 */
DPS_CURLE(HTTP3, protocol)
#endif
#if LIBCURL_VERSION_NUM >= 0x074500 /* 7.69.0 */
DPS_CURLE(QUIC_CONNECT_ERROR, DIAL)
#endif
#if LIBCURL_VERSION_NUM >= 0x074900 /* 7.73.0 */
DPS_CURLE(PROXY, proxy)
#endif
#if LIBCURL_VERSION_NUM >= 0x074d00 /* 7.77.0 */
DPS_CURLE(SSL_CLIENTCERT, credentials)
#endif
#if LIBCURL_VERSION_NUM >= 0x075400 /* 7.84.0 */
DPS_CURLE(UNRECOVERABLE_POLL, network)
#endif
