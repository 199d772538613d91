/* What labnode's bindings are generated from: the installed OpenZFS user headers. */
#include <libzfs.h>
#include <libzfs_core.h>
#include <libnvpair.h>
