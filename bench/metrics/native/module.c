/* A module object for the shared library, so that setuptools builds it as an extension on every platform;
 * Python reaches the kernels through ctypes, not through this module. */
#include <Python.h>

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_kernels",
    .m_doc = "bench.metrics' compiled kernels (loaded with ctypes)",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&kernels_module); }
