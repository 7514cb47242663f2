/* tcpestats: see estats.h. Windows only (MSVC or mingw-w64). */

#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0600     /* Vista: the EStats calls, TokenElevation */
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif

#include <winsock2.h>
#include <ws2tcpip.h>
#include <iphlpapi.h>
#include <tcpestats.h>

#include <string.h>

#include "estats.h"

typedef char tcpestats_check_denied[(ERROR_ACCESS_DENIED == TCPESTATS_ERROR_ACCESS_DENIED) ? 1 : -1];
typedef char tcpestats_check_not_found[(ERROR_NOT_FOUND == TCPESTATS_ERROR_NOT_FOUND) ? 1 : -1];
/* the sizes _tcp_info.h parses */
typedef char tcpestats_check_data[(sizeof(TCP_ESTATS_DATA_ROD_v0) == 96) ? 1 : -1];
typedef char tcpestats_check_path[(sizeof(TCP_ESTATS_PATH_ROD_v0) == 160) ? 1 : -1];

/* The prototypes of iphlpapi.h, as pointers (the IPv6 ones take a MIB_TCP6ROW). */
typedef ULONG (WINAPI *get4_fn)(PMIB_TCPROW, TCP_ESTATS_TYPE, PUCHAR, ULONG, ULONG, PUCHAR, ULONG, ULONG,
                                PUCHAR, ULONG, ULONG);
typedef ULONG (WINAPI *set4_fn)(PMIB_TCPROW, TCP_ESTATS_TYPE, PUCHAR, ULONG, ULONG, ULONG);
typedef ULONG (WINAPI *get6_fn)(PMIB_TCP6ROW, TCP_ESTATS_TYPE, PUCHAR, ULONG, ULONG, PUCHAR, ULONG, ULONG,
                                PUCHAR, ULONG, ULONG);
typedef ULONG (WINAPI *set6_fn)(PMIB_TCP6ROW, TCP_ESTATS_TYPE, PUCHAR, ULONG, ULONG, ULONG);

static tcpestats_fn resolve(HMODULE dll, const char *name)
{
    return (tcpestats_fn)GetProcAddress(dll, name);
}

static int elevated(void)
{
    HANDLE tok = NULL;
    TOKEN_ELEVATION te;
    DWORD len = 0;
    int yes = 0;
    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &tok))
        return 0;
    if (GetTokenInformation(tok, TokenElevation, &te, sizeof(te), &len))
        yes = te.TokenIsElevated != 0;
    CloseHandle(tok);
    return yes;
}

int tcpestats_open(tcpestats_t *e)
{
    static const char *names[4] = {"GetPerTcpConnectionEStats", "SetPerTcpConnectionEStats",
                                   "GetPerTcp6ConnectionEStats", "SetPerTcp6ConnectionEStats"};
    tcpestats_fn fn[4];
    HMODULE dll;
    int i;
    memset(e, 0, sizeof(*e));
    /* Loaded already (tcpfetch links it); LoadLibrary keeps it loaded for as long as we hold
     * the pointers. */
    dll = LoadLibraryA("iphlpapi.dll");
    if (!dll)
        return e->state = TCPESTATS_NO_DLL;
    for (i = 0; i < 4; i++)
        fn[i] = resolve(dll, names[i]);
    for (i = 0; i < 2; i++) {
        if (!fn[i]) {
            e->missing = names[i];
            return e->state = TCPESTATS_NO_EXPORT;
        }
    }
    e->get4 = fn[0];
    e->set4 = fn[1];
    e->get6 = fn[2];
    e->set6 = fn[3];
    e->v6 = fn[2] && fn[3];
    if (!elevated())
        return e->state = TCPESTATS_NOT_ELEVATED;
    return e->state = TCPESTATS_READY;
}

static void row4(const tcpestats_conn *c, MIB_TCPROW *r)
{
    memset(r, 0, sizeof(*r));
    r->dwState = MIB_TCP_STATE_ESTAB;
    memcpy(&r->dwLocalAddr, c->local_addr, 4);
    memcpy(&r->dwRemoteAddr, c->remote_addr, 4);
    r->dwLocalPort = htons(c->local_port);     /* the MIB's ports: network order, low 16 bits */
    r->dwRemotePort = htons(c->remote_port);
}

static void row6(const tcpestats_conn *c, MIB_TCP6ROW *r)
{
    memset(r, 0, sizeof(*r));
    r->State = MIB_TCP_STATE_ESTAB;
    memcpy(&r->LocalAddr, c->local_addr, 16);
    memcpy(&r->RemoteAddr, c->remote_addr, 16);
    r->dwLocalScopeId = c->local_scope_id;
    r->dwRemoteScopeId = c->remote_scope_id;
    r->dwLocalPort = htons(c->local_port);
    r->dwRemotePort = htons(c->remote_port);
}

static ULONG set_one(tcpestats_t *e, const tcpestats_conn *c, TCP_ESTATS_TYPE type)
{
    /* TCP_ESTATS_DATA_RW_v0 and TCP_ESTATS_PATH_RW_v0 are both { BOOLEAN EnableCollection; } */
    TCP_ESTATS_DATA_RW_v0 rw;
    rw.EnableCollection = TRUE;
    if (c->family == 4) {
        MIB_TCPROW r;
        row4(c, &r);
        return ((set4_fn)e->set4)(&r, type, (PUCHAR)&rw, 0, sizeof(rw), 0);
    } else {
        MIB_TCP6ROW r;
        row6(c, &r);
        return ((set6_fn)e->set6)(&r, type, (PUCHAR)&rw, 0, sizeof(rw), 0);
    }
}

static ULONG get_one(tcpestats_t *e, const tcpestats_conn *c, TCP_ESTATS_TYPE type, uint8_t *rod, size_t len)
{
    if (c->family == 4) {
        MIB_TCPROW r;
        row4(c, &r);
        return ((get4_fn)e->get4)(&r, type, NULL, 0, 0, NULL, 0, 0, rod, 0, (ULONG)len);
    } else {
        MIB_TCP6ROW r;
        row6(c, &r);
        return ((get6_fn)e->get6)(&r, type, NULL, 0, 0, NULL, 0, 0, rod, 0, (ULONG)len);
    }
}

uint32_t tcpestats_enable(tcpestats_t *e, const tcpestats_conn *c)
{
    ULONG r;
    if (e->state != TCPESTATS_READY || (c->family == 6 && !e->v6))
        return ERROR_NOT_SUPPORTED;
    r = set_one(e, c, TcpConnectionEstatsData);
    if (r == NO_ERROR)
        r = set_one(e, c, TcpConnectionEstatsPath);
    if (r == ERROR_ACCESS_DENIED)
        e->state = TCPESTATS_NOT_ELEVATED;
    else if (r == NO_ERROR)
        e->enabled++;
    else
        e->failures++;
    return r;
}

uint32_t tcpestats_read(tcpestats_t *e, const tcpestats_conn *c, uint8_t *data, size_t dlen,
                        uint8_t *path, size_t plen, int *got)
{
    ULONG r, last = NO_ERROR;
    *got = 0;
    if (e->state != TCPESTATS_READY || (c->family == 6 && !e->v6))
        return ERROR_NOT_SUPPORTED;
    r = get_one(e, c, TcpConnectionEstatsData, data, dlen);
    if (r == NO_ERROR)
        *got |= 1;
    else
        last = r;
    r = get_one(e, c, TcpConnectionEstatsPath, path, plen);
    if (r == NO_ERROR)
        *got |= 2;
    else
        last = r;
    if (*got)
        e->reads++;
    if (last != NO_ERROR)
        e->failures++;
    return last;
}
