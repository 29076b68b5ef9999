/* writer -- (in progress) */
#include "writer.h"
