/* pagecache: how many bytes of the given files are in the page cache, counted
 * with mincore(2) as fincore(1) and vmtouch do, but
 *   - block devices count too (their size from lseek, where fincore sees 0);
 *   - each inode counts once (hard links, the same file named twice);
 *   - paths come NUL-separated on stdin (`find ... -print0 | pagecache`), so
 *     hundreds of thousands of files cost one process;
 *   - symbolic links are followed (/proc/PID/fd/N: the files a process holds
 *     open, unlinked ones too).
 * Prints "RESIDENT_BYTES FILES SIZE_BYTES". Files that cannot be opened or mapped
 * are reported on stderr and make the exit status 1. Used by bench/mount.sh.
 *
 * Beware: mapping a file of a FUSE passthrough mount maps the backing file, so
 * those pages would be counted under the backing file as well; count the
 * backing files instead. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <search.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct key {
	dev_t dev;
	ino_t ino;
};

static int cmp(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return 0;
}

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	void *seen = NULL;
	char *path = NULL;
	size_t cap = 0;
	ssize_t len;
	uint64_t resident = 0, files = 0, total = 0;
	int status = 0;
	unsigned char *vec = NULL;
	size_t veccap = 0;

	while ((len = getdelim(&path, &cap, '\0', stdin)) > 0) {
		if (path[len - 1] == '\0')
			len--;
		path[len] = '\0';
		if (len == 0)
			continue;
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (fd < 0) {
			fprintf(stderr, "pagecache: %s: %s\n", path, strerror(errno));
			status = 1;
			continue;
		}
		struct stat st;
		if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
			close(fd);
			continue;
		}
		struct key *k = malloc(sizeof(*k));
		k->dev = st.st_dev;
		k->ino = st.st_ino;
		if (S_ISBLK(st.st_mode)) {
			k->dev = st.st_rdev; /* the device itself, wherever its node is */
			k->ino = 0;
		}
		struct key **found = tsearch(k, &seen, cmp);
		if (*found != k) {
			free(k);
			close(fd);
			continue;
		}
		off_t size = S_ISBLK(st.st_mode) ? lseek(fd, 0, SEEK_END) : st.st_size;
		files++;
		if (size <= 0) {
			close(fd);
			continue;
		}
		total += size;
		void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			fprintf(stderr, "pagecache: %s: mmap: %s\n", path, strerror(errno));
			status = 1;
			close(fd);
			continue;
		}
		size_t pages = (size + page - 1) / page;
		if (pages > veccap) {
			free(vec);
			veccap = pages;
			vec = malloc(veccap);
		}
		if (mincore(map, size, vec) < 0) {
			fprintf(stderr, "pagecache: %s: mincore: %s\n", path, strerror(errno));
			status = 1;
		} else {
			for (size_t i = 0; i < pages; i++)
				resident += vec[i] & 1;
		}
		munmap(map, size);
		close(fd);
	}
	printf("%llu %llu %llu\n", (unsigned long long)(resident * page),
	       (unsigned long long)files, (unsigned long long)total);
	return status;
}
