/*
 * memtool: reads files inside the test VM through one kernel path each, so
 * the harness can measure page cache growth per path. Built static
 * (gcc -static -O2) by the test harness; the VM has no libc.
 *
 *   memtool read     FILE...  read(2) in 64 KiB chunks
 *   memtool mmap     FILE...  mmap(PROT_READ) and touch one byte per page
 *   memtool sendfile FILE...  sendfile(2) the whole file to /dev/null
 *   memtool splice   FILE...  splice(2) the whole file into a pipe, drained
 *   memtool cached            print the "Cached:" line of /proc/meminfo in KiB
 *
 * Every mode prints "<mode> <file> <bytes>" per file (bytes actually
 * transferred) and "sum <hex>" of the bytes seen by read/mmap, so the caller
 * can check that it read the whole file. Exit status 1 on any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

static int die(const char *what, const char *file)
{
	fprintf(stderr, "memtool: %s %s: %s\n", what, file, strerror(errno));
	return 1;
}

static long cached_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Cached: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static int do_read(const char *file, uint64_t *sum, long long *bytes)
{
	static unsigned char buf[64 * 1024];
	int fd = open(file, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return die("open", file);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i += 4096)
			*sum = *sum * 31 + buf[i];
		*bytes += n;
	}
	if (n < 0)
		return die("read", file);
	close(fd);
	return 0;
}

static int do_mmap(const char *file, uint64_t *sum, long long *bytes)
{
	struct stat st;
	volatile unsigned char *p;
	long page = sysconf(_SC_PAGESIZE);
	int fd = open(file, O_RDONLY);

	if (fd < 0)
		return die("open", file);
	if (fstat(fd, &st) < 0)
		return die("fstat", file);
	if (st.st_size == 0) {
		close(fd);
		return 0;
	}
	p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return die("mmap", file);
	for (off_t i = 0; i < st.st_size; i += page)
		*sum = *sum * 31 + p[i];
	*bytes += st.st_size;
	munmap((void *)p, st.st_size);
	close(fd);
	return 0;
}

static int do_sendfile(const char *file, long long *bytes)
{
	int fd = open(file, O_RDONLY);
	int out = open("/dev/null", O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return die("open", file);
	if (out < 0)
		return die("open", "/dev/null");
	while ((n = sendfile(out, fd, NULL, 1 << 20)) > 0)
		*bytes += n;
	if (n < 0)
		return die("sendfile", file);
	close(out);
	close(fd);
	return 0;
}

static int do_splice(const char *file, long long *bytes)
{
	static char buf[64 * 1024];
	int fd = open(file, O_RDONLY);
	int pfd[2];
	ssize_t n;

	if (fd < 0)
		return die("open", file);
	if (pipe(pfd) < 0)
		return die("pipe", file);
	while ((n = splice(fd, NULL, pfd[1], NULL, sizeof(buf), 0)) > 0) {
		*bytes += n;
		while (n > 0) {
			ssize_t m = read(pfd[0], buf, n);
			if (m <= 0)
				return die("read pipe", file);
			n -= m;
		}
	}
	if (n < 0)
		return die("splice", file);
	close(pfd[0]);
	close(pfd[1]);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "cached")) {
		long kib = cached_kib();
		if (kib < 0) {
			fprintf(stderr, "memtool: no Cached: in /proc/meminfo\n");
			return 1;
		}
		printf("%ld\n", kib);
		return 0;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: memtool read|mmap|sendfile|splice FILE... | memtool cached\n");
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		uint64_t sum = 0;
		long long bytes = 0;
		int rc;

		if (!strcmp(argv[1], "read"))
			rc = do_read(argv[i], &sum, &bytes);
		else if (!strcmp(argv[1], "mmap"))
			rc = do_mmap(argv[i], &sum, &bytes);
		else if (!strcmp(argv[1], "sendfile"))
			rc = do_sendfile(argv[i], &bytes);
		else if (!strcmp(argv[1], "splice"))
			rc = do_splice(argv[i], &bytes);
		else {
			fprintf(stderr, "memtool: unknown mode %s\n", argv[1]);
			return 2;
		}
		if (rc)
			return rc;
		printf("%s %s %lld sum %016llx\n", argv[1], argv[i], bytes,
		       (unsigned long long)sum);
	}
	return 0;
}
