/*
 * dps_curl_errors.h - the CURLcodes a failed transfer is named by, each
 * with its failure kind: one X-macro list, in the manner of Lua-cURLv3's
 * lcerr_easy.h.
 * Include it after defining
 *
 *   DPS_CURLE(CODE, KIND)
 *
 * CODE is the CURLcode by its full name, which is also the name a failure
 * message shows (mnemonics matter: OpenWrt's libcurl has no verbose error
 * strings).  KIND is a failure kind (lower case) or a rule (upper case)
 * that dps_http_failure.c settles from the transfer's state:
 *   DIAL       connect, or proxy when a proxy is dialled instead
 *   HANDSHAKE  tls, or network when the connection was reset or closed
 *   WRITE      too_large when a limit stopped the transfer, else oom
 *   SCHEME     config (the URL's scheme), or protocol (an HTTP/0.9 reply)
 *   SEND       credentials (a TLS 1.3 "certificate required" alert), else network
 *   RECV       SEND's cases, plus proxy (a refused CONNECT) and protocol
 *              (bad chunked framing)
 *   READ       config when the body's file could not be read (it ended
 *              early, or the system said no), else network
 * A code that is not listed is "network" and is named "CURLE".  Codes newer
 * than libcurl 7.32 carry the version that brought them.
 */
DPS_CURLE(CURLE_UNSUPPORTED_PROTOCOL, SCHEME)
DPS_CURLE(CURLE_FAILED_INIT, config)
DPS_CURLE(CURLE_URL_MALFORMAT, config)
DPS_CURLE(CURLE_NOT_BUILT_IN, config)
DPS_CURLE(CURLE_COULDNT_RESOLVE_PROXY, proxy)
DPS_CURLE(CURLE_COULDNT_RESOLVE_HOST, resolve)
DPS_CURLE(CURLE_COULDNT_CONNECT, DIAL)
#if LIBCURL_VERSION_NUM >= 0x073300 /* 7.51.0 */
DPS_CURLE(CURLE_WEIRD_SERVER_REPLY, protocol)
#endif
#if LIBCURL_VERSION_NUM >= 0x072600 /* 7.38.0 */
DPS_CURLE(CURLE_HTTP2, protocol)
#endif
DPS_CURLE(CURLE_PARTIAL_FILE, protocol)
DPS_CURLE(CURLE_WRITE_ERROR, WRITE)
DPS_CURLE(CURLE_READ_ERROR, READ)
DPS_CURLE(CURLE_OUT_OF_MEMORY, oom)
DPS_CURLE(CURLE_OPERATION_TIMEDOUT, timeout)
DPS_CURLE(CURLE_ABORTED_BY_CALLBACK, READ)
DPS_CURLE(CURLE_SSL_CONNECT_ERROR, HANDSHAKE)
DPS_CURLE(CURLE_BAD_FUNCTION_ARGUMENT, config)
DPS_CURLE(CURLE_INTERFACE_FAILED, DIAL)
DPS_CURLE(CURLE_TOO_MANY_REDIRECTS, network)
DPS_CURLE(CURLE_UNKNOWN_OPTION, config)
DPS_CURLE(CURLE_GOT_NOTHING, network)
DPS_CURLE(CURLE_SSL_ENGINE_NOTFOUND, credentials)
DPS_CURLE(CURLE_SSL_ENGINE_SETFAILED, credentials)
DPS_CURLE(CURLE_SEND_ERROR, SEND)
DPS_CURLE(CURLE_RECV_ERROR, RECV)
DPS_CURLE(CURLE_SSL_CERTPROBLEM, credentials)
DPS_CURLE(CURLE_SSL_CIPHER, tls)
DPS_CURLE(CURLE_PEER_FAILED_VERIFICATION, tls)
DPS_CURLE(CURLE_BAD_CONTENT_ENCODING, protocol)
DPS_CURLE(CURLE_FILESIZE_EXCEEDED, too_large)
DPS_CURLE(CURLE_USE_SSL_FAILED, tls)
DPS_CURLE(CURLE_SEND_FAIL_REWIND, network)
DPS_CURLE(CURLE_SSL_ENGINE_INITFAILED, credentials)
DPS_CURLE(CURLE_SSL_CACERT_BADFILE, tls)
DPS_CURLE(CURLE_SSL_SHUTDOWN_FAILED, tls)
DPS_CURLE(CURLE_AGAIN, network)
DPS_CURLE(CURLE_SSL_CRL_BADFILE, tls)
DPS_CURLE(CURLE_SSL_ISSUER_ERROR, tls)
#if LIBCURL_VERSION_NUM >= 0x072700 /* 7.39.0 */
DPS_CURLE(CURLE_SSL_PINNEDPUBKEYNOTMATCH, tls)
#endif
#if LIBCURL_VERSION_NUM >= 0x072900 /* 7.41.0 */
DPS_CURLE(CURLE_SSL_INVALIDCERTSTATUS, tls)
#endif
#if LIBCURL_VERSION_NUM >= 0x073100 /* 7.49.0 */
DPS_CURLE(CURLE_HTTP2_STREAM, protocol)
#endif
#if LIBCURL_VERSION_NUM >= 0x073b00 /* 7.59.0 */
DPS_CURLE(CURLE_RECURSIVE_API_CALL, config)
#endif
#if LIBCURL_VERSION_NUM >= 0x074400 /* 7.68.0 */
DPS_CURLE(CURLE_HTTP3, protocol)
#endif
#if LIBCURL_VERSION_NUM >= 0x074500 /* 7.69.0 */
DPS_CURLE(CURLE_QUIC_CONNECT_ERROR, DIAL)
#endif
#if LIBCURL_VERSION_NUM >= 0x074900 /* 7.73.0 */
DPS_CURLE(CURLE_PROXY, proxy)
#endif
#if LIBCURL_VERSION_NUM >= 0x074d00 /* 7.77.0 */
DPS_CURLE(CURLE_SSL_CLIENTCERT, credentials)
#endif
#if LIBCURL_VERSION_NUM >= 0x075400 /* 7.84.0 */
DPS_CURLE(CURLE_UNRECOVERABLE_POLL, network)
#endif
