/*
 * ioc_addr.h -- sockaddr <-> ioc_addr, shared by both backends.
 * The backend includes its socket headers (winsock2.h + ws2tcpip.h, or
 * netinet/in.h) before this file.
 */
#ifndef IOC_ADDR_H
#define IOC_ADDR_H

#include <string.h>
#include "ioc_core.h"

static void ioc_decode_addr(const struct sockaddr *sa, int len, ioc_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET && len >= (int)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        out->family = AF_INET;
        out->port = ntohs(in4->sin_port);
        memcpy(out->addr, &in4->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && len >= (int)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        out->family = AF_INET6;
        out->port = ntohs(in6->sin6_port);
        memcpy(out->addr, &in6->sin6_addr, 16);
        out->flowinfo = ntohl(in6->sin6_flowinfo);
        out->scope_id = in6->sin6_scope_id;
    }
}

int ioc_encode_addr(const ioc_addr *in, void *sockaddr_out, int out_len)
{
    if (in->family == AF_INET && out_len >= (int)sizeof(struct sockaddr_in)) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)sockaddr_out;
        memset(in4, 0, sizeof(*in4));
        in4->sin_family = AF_INET;
        in4->sin_port = htons((unsigned short)in->port);
        memcpy(&in4->sin_addr, in->addr, 4);
        return (int)sizeof(*in4);
    }
    if (in->family == AF_INET6 && out_len >= (int)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sockaddr_out;
        memset(in6, 0, sizeof(*in6));
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((unsigned short)in->port);
        memcpy(&in6->sin6_addr, in->addr, 16);
        in6->sin6_flowinfo = htonl(in->flowinfo);
        in6->sin6_scope_id = in->scope_id;
        return (int)sizeof(*in6);
    }
    return -22;   /* EINVAL / WSAEINVAL - 10000: the caller maps it to ValueError */
}

int ioc_decode_sockaddr(const void *sockaddr_in, int len, ioc_addr *out)
{
    ioc_decode_addr((const struct sockaddr *)sockaddr_in, len, out);
    return out->family != 0 ? 0 : -22;
}

#endif /* IOC_ADDR_H */
