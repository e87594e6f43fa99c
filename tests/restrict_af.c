// restrict_af "AF_UNIX AF_INET ..." CMD [ARGS...]: runs CMD with socket(2) failing with
// EAFNOSUPPORT for every address family not named, as systemd's RestrictAddressFamilies= does
// (a seccomp filter on socket's first argument). The packaging test runs the packaged daemon under
// the families its unit allows, so a library that needs another family shows up here.
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int family(const char* name) {
    static const struct {
        const char* name;
        int af;
    } known[] = {{"AF_UNIX", AF_UNIX},       {"AF_INET", AF_INET},     {"AF_INET6", AF_INET6},
                 {"AF_NETLINK", AF_NETLINK}, {"AF_PACKET", AF_PACKET}, {"AF_BLUETOOTH", AF_BLUETOOTH}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; ++i)
        if (strcmp(name, known[i].name) == 0)
            return known[i].af;
    fprintf(stderr, "restrict_af: unknown family %s\n", name);
    exit(2);
}

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: restrict_af \"AF_UNIX AF_INET ...\" CMD [ARGS...]\n");
        return 2;
    }
    int allowed[16], n = 0;
    char* list = strdup(argv[1]);
    for (char* tok = strtok(list, " "); tok && n < 16; tok = strtok(NULL, " "))
        allowed[n++] = family(tok);
    // load the syscall number; not socket(2): allow. Else load the family; each allowed one jumps
    // to ALLOW; past the list: ERRNO.
    struct sock_filter f[4 + 16 + 2];
    int k = 0;
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 1, 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    for (int i = 0; i < n; ++i) // jump over the remaining checks and the ERRNO to the final ALLOW
        f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)allowed[i],
                                              (unsigned char)(n - i), 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {(unsigned short)k, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("restrict_af: seccomp");
        return 1;
    }
    execvp(argv[2], argv + 2);
    perror("restrict_af: exec");
    return 127;
}
