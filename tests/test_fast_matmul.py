"""Every matmul rung of lessons 01 and 06 equals torch; numba stays optional; the benchmark command runs.

Correctness only: no test here times anything (the benchmark prints the speeds).
"""
import csv
import json
import os
import platform
import sys

import pytest
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from conftest import BIN, run
from mini_nn.matmul import matmul_loops, matmul_elementwise, matmul_broadcast, matmul_einsum

fm = pytest.importorskip('mini_nn.fast_matmul', reason="numba is not installed (pip install 'mini_nn[fast]')")
matmul_tiled = fm.matmul_tiled

PYTHON_RUNGS = {'loops': matmul_loops, 'elementwise': matmul_elementwise, 'broadcast': matmul_broadcast,
                'einsum': matmul_einsum}
JIT_RUNGS = {'jit': fm.matmul_jit, 'jit_ikj': fm.matmul_jit_ikj, 'jit_fastmath': fm.matmul_jit_fastmath,
             'jit_threads': fm.matmul_jit_threads, 'jit_blocked': fm.matmul_jit_blocked,
             'matmul_tiled': matmul_tiled}
ALL_RUNGS = {**PYTHON_RUNGS, **JIT_RUNGS}


def layout(t:torch.Tensor, how:str)->torch.Tensor:
    "The values of `t` in another memory layout: 'contiguous', 'transposed', 'sliced' or 'expanded'."
    if how == 'transposed': return t.T.contiguous().T
    if how == 'sliced':  # every other row and column of a bigger tensor
        big = torch.zeros(2 * t.shape[0] + 1, 2 * t.shape[1] + 1, dtype=t.dtype)
        big[1::2, 1::2] = t
        return big[1::2, 1::2]
    if how == 'expanded':  # stride 0 along dim 0: every row the same
        return t[:1].expand(t.shape[0], t.shape[1]) if t.shape[0] else t
    return t


def check_equal(matmul, a, b):
    a0, b0 = a.clone(), b.clone()
    c = matmul(a, b)
    assert c.shape == (a.shape[0], b.shape[1]) and c.dtype == a.dtype
    ref = (a.double() @ b.double()).to(a.dtype)
    tol = dict(rtol=1e-5, atol=1e-4 * max(a.shape[1], 1) ** 0.5) if a.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c, ref, **tol)
    assert torch.equal(a, a0) and torch.equal(b, b0), 'inputs were modified'


# shapes around the blocked kernel's blocks (KC=384, NB=256), around this machine's register tile and cache blocks
# for float32 (the largest tile), the small-product cut-off, and empty ones
(MR, NR), (KC, NC) = fm.register_tile(4), fm.cache_blocks(*fm.register_tile(4), 4)
SHAPES = [(1, 1, 1), (7, 1, 3), (1, 9, 1), (3, 385, 15), (97, 383, 17), (95, 769, 33), (65, 64, 66),
          (100, 70, 257), (5, 784, 10), (0, 5, 3), (4, 0, 3), (4, 5, 0),
          (MR + 1, KC + 1, NR - 1), (2 * MR - 1, KC - 1, NC + 1), (3 * MR, 2 * KC + 3, NC - 1), (MR - 1, 70, 2 * NC + NR + 1)]


@pytest.mark.parametrize('name', JIT_RUNGS)
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=['f32', 'f64'])
def test_jit_rungs_equal_torch_around_block_sizes(name, shape, dtype):
    m, k, n = shape
    g = torch.Generator().manual_seed(m * 10007 + k * 101 + n)
    check_equal(JIT_RUNGS[name], torch.randn(m, k, generator=g, dtype=dtype), torch.randn(k, n, generator=g, dtype=dtype))


@pytest.mark.parametrize('name', ALL_RUNGS)
@pytest.mark.parametrize('how', ['transposed', 'sliced', 'expanded'])
def test_every_rung_accepts_any_strides(name, how):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, 11, generator=g), torch.randn(11, 6, generator=g)
    check_equal(ALL_RUNGS[name], layout(a, how), layout(b, how))
    check_equal(ALL_RUNGS[name], layout(a.double(), how), b.double())


@pytest.mark.parametrize('name', ALL_RUNGS)
def test_every_rung_on_small_random_shapes(name):
    g = torch.Generator().manual_seed(1)
    for m, k, n in [(3, 4, 5), (1, 6, 1), (6, 1, 7), (0, 3, 2), (2, 0, 3), (2, 3, 0)]:
        for dtype in (torch.float32, torch.float64):
            check_equal(ALL_RUNGS[name], torch.randn(m, k, generator=g, dtype=dtype), torch.randn(k, n, generator=g, dtype=dtype))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 140), k=st.integers(0, 420), n=st.integers(0, 70),
       how_a=st.sampled_from(['contiguous', 'transposed', 'sliced', 'expanded']),
       how_b=st.sampled_from(['contiguous', 'transposed', 'sliced']),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**16))
def test_matmul_tiled_equals_torch_on_random_shapes_and_layouts(m, k, n, how_a, how_b, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(m, k, generator=g, dtype=dtype), torch.randn(k, n, generator=g, dtype=dtype)
    check_equal(matmul_tiled, layout(a, how_a), layout(b, how_b))


def test_matmul_tiled_half_precision_is_computed_in_float32_and_rounded_back():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(70, 90, generator=g), torch.randn(90, 40, generator=g)
    for dtype in (torch.float16, torch.bfloat16):
        c = matmul_tiled(a.to(dtype), b.to(dtype))
        assert c.dtype == dtype
        torch.testing.assert_close(c, (a.to(dtype).float() @ b.to(dtype).float()).to(dtype))


def test_matmul_tiled_propagates_nan_and_inf_like_torch():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(97, 800, generator=g), torch.randn(800, 33, generator=g)
    a[5, 3], a[60, 500], b[7, 20] = float('nan'), float('inf'), float('-inf')
    c, ref = matmul_tiled(a, b), a @ b
    assert torch.equal(c.isnan(), ref.isnan()) and torch.equal(c.isinf(), ref.isinf())
    torch.testing.assert_close(c[ref.isfinite()], ref[ref.isfinite()], rtol=1e-4, atol=1e-3)


def test_matmul_tiled_ignores_requires_grad_and_keeps_inputs():
    a, b = torch.randn(70, 70, requires_grad=True), torch.randn(70, 70)
    torch.testing.assert_close(matmul_tiled(a, b), (a @ b).detach())


@pytest.mark.parametrize('name', JIT_RUNGS)
def test_bad_inputs_are_refused_like_lesson_01(name):
    f = JIT_RUNGS[name]
    with pytest.raises(ValueError, match=r'got a \(2, 3\) and b \(2, 3\)'): f(torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(TypeError, match='must share one dtype'): f(torch.ones(2, 3), torch.ones(3, 2).double())
    with pytest.raises(TypeError, match='floating-point'): f(torch.ones(2, 3, dtype=torch.long), torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match='must be a torch.Tensor'): f([[1.]], torch.ones(1, 1))


KERNELS = ['ijk_kernel', 'ikj_kernel', 'ikj_fastmath_kernel', 'ikj_threads_kernel', '_blocked', '_tiled']

@pytest.mark.parametrize('kernel', KERNELS)
def test_each_kernel_writes_every_entry_of_an_uninitialised_c(kernel):
    "_run_kernel hands the kernels `np.empty` memory: garbage there (NaN here) must not survive, edges included."
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2 * MR + 1, KC + 5)).astype(np.float32), rng.standard_normal((KC + 5, 3 * NR - 1)).astype(np.float32)
    assert a.shape[0] * a.shape[1] * b.shape[1] >= fm.SMALL  # large enough for _tiled to take the tiled path
    c = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
    getattr(fm, kernel)(a, b, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('mr, nr', [(1, 1), (2, 4), (3, 16)])  # small tiles: each compiles afresh; 8×32 runs in matmul_tiled's tests
def test_generated_micro_kernel_adds_its_tile_at_the_given_place_only(mr, nr):
    g = torch.Generator().manual_seed(4)
    a, b, c = torch.randn(50, mr, generator=g), torch.randn(50, nr, generator=g), torch.randn(mr + 3, nr + 2, generator=g)
    expected = c.clone()
    expected[2:2 + mr, 1:1 + nr] += a.T @ b
    fm.njit(fastmath={'contract'})(fm.make_micro_kernel(mr, nr))(a.numpy(), b.numpy(), c.numpy(), 2, 1)
    torch.testing.assert_close(c, expected)


def test_micro_kernel_source_has_one_line_per_row_and_a_running_sum_per_entry():
    src = fm.micro_kernel_source(3, 5)
    assert src.count('x = a[p, ') == 3 and src.count(' += x * b') == 15 and src.count('c[i0 + ') == 15


def test_the_micro_kernel_stub_says_it_runs_inside_numba_kernels():
    with pytest.raises(TypeError, match='inside numba kernels'): fm.micro_kernel(None, None, None, 0, 0)


@pytest.mark.parametrize('features, tile32, tile64', [('+avx512f,+avx2,+fma', (8, 32), (8, 16)),
                                                     ('+avx2,+fma,-avx512f', (4, 16), (4, 8)),
                                                     ('+sse4.2', (4, 8), (4, 4)), ('', (4, 8), (4, 4))])
def test_the_register_tile_follows_the_features_numba_compiles_for(monkeypatch, features, tile32, tile64):
    monkeypatch.setattr(fm.numba.config, 'CPU_FEATURES', features)
    assert (fm.register_tile(4), fm.register_tile(8)) == (tile32, tile64)


X86 = platform.machine().lower() in ('x86_64', 'amd64')
_LOOPS = """
import json
from mini_nn.fast_matmul import register_tile, vector_bytes, micro_kernel_asm, hot_loop, fma_registers
mr, nr = register_tile(8)
loop = hot_loop(micro_kernel_asm(mr, nr, 'float64'))
print(json.dumps(dict(vector_bytes=vector_bytes(), tile=(mr, nr), sums=fma_registers(loop), stack=[l for l in loop if '%rsp' in l])))
"""


@pytest.mark.skipif(not X86, reason="reads x86 assembly")
def test_the_other_vector_width_also_gets_a_tile_of_vector_fmas_in_registers(tmp_path):
    "The float64 tile compiled (not run) for the width this CPU lacks: AVX-512 on an AVX2 machine, AVX2 on an AVX-512 one. Lesson 06 checks its own float32 one."
    import llvmlite.binding as llb
    host = llb.get_host_cpu_features()
    if not (host.get('avx2') and host.get('fma')): pytest.skip("this CPU has no AVX2 and FMA")
    avx512 = not host.get('avx512f')  # the other width
    features = ','.join(('+' if avx512 else '-') + f if f.startswith('avx512') else ('+' if on else '-') + f for f, on in host.items())
    env = {**os.environ, 'NUMBA_CPU_NAME': 'sapphirerapids' if avx512 else 'haswell', 'NUMBA_CPU_FEATURES': features,
           'NUMBA_CACHE_DIR': str(tmp_path)}
    got = json.loads(run(sys.executable, '-c', _LOOPS, env=env).stdout)
    width, register = (64, '%zmm') if avx512 else (32, '%ymm')
    (mr, nr), sums = got['tile'], got['sums']  # sums: FMAs into each register (an unrolled loop does several steps of p a pass)
    assert got['vector_bytes'] == width and (mr, nr) == ((8, 16) if avx512 else (4, 8)), got
    assert len(sums) == mr * nr * 8 // width and len(set(sums.values())) == 1, got  # every register of sums, alike
    assert all(r.startswith(register) for r in sums), got
    assert got['stack'] == [], got  # none spilled to the stack


def test_cache_blocks_fill_half_of_l1_and_half_of_l2(monkeypatch):
    monkeypatch.setattr(fm, 'cache_sizes', lambda: (48 << 10, 2 << 20))
    assert fm.cache_blocks(8, 32, 4) == (768, 320)   # 768×8×4 B = 24 KiB; 768×320×4 B = 960 KiB
    assert fm.cache_blocks(4, 8, 8) == (768, 168)
    monkeypatch.setattr(fm, 'cache_sizes', lambda: (32 << 10, 64 << 10))
    assert fm.cache_blocks(8, 32, 4) == (512, 32)    # a block of b never narrower than one panel


def test_pack_panels_pads_the_last_panel_with_zeros_even_in_a_used_buffer():
    b = torch.arange(12.).reshape(2, 6)
    fm.packed_panels(torch.full((2, 8), float('nan')).numpy(), 4)  # leaves NaN in the buffer the next call reuses
    p = torch.from_numpy(fm.packed_panels(b.numpy(), 4))
    assert p.shape == (2, 2, 4)
    assert torch.equal(p[0], b[:, :4]) and torch.equal(p[1, :, :2], b[:, 4:]) and not p[1, :, 2:].any()


def test_each_thread_packs_into_its_own_buffer():
    from concurrent.futures import ThreadPoolExecutor
    mine = fm.work_buffer('panels', (3, 5, 8), np.float32)
    with ThreadPoolExecutor(1) as pool: theirs = pool.submit(fm.work_buffer, 'panels', (3, 5, 8), np.float32).result()
    assert theirs.ctypes.data != mine.ctypes.data
    assert fm.work_buffer('panels', (3, 5, 8), np.float32).ctypes.data == mine.ctypes.data


def test_matmul_tiled_from_two_threads_at_once_is_right_in_both():
    from concurrent.futures import ThreadPoolExecutor
    pairs = [(torch.randn(200, 300), torch.randn(300, 90)) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            for (x, y), got in zip(pairs, pool.map(lambda xy: fm.matmul_tiled(*xy), pairs)): assert torch.allclose(got, x @ y, atol=1e-3)


# numba is optional ------------------------------------------------------------------------------------------

NO_NUMBA = "import sys; sys.modules['numba'] = None\n"  # makes every `import numba` in this process fail


def test_without_numba_lesson_01_works_and_fast_matmul_names_the_extra():
    code = NO_NUMBA + ("import torch, mini_nn.matmul as mm\n"
                       "print(mm.matmul_loops(torch.ones(1, 2), torch.ones(2, 1)).item())\n"
                       "try: from mini_nn.fast_matmul import matmul_tiled\n"
                       "except ImportError as e: print(type(e).__name__, e, '| cause:', type(e.__cause__).__name__, '| name:', e.name)")
    out = run(BIN/'python', '-c', code).stdout
    assert out.splitlines() == ['2.0', "ImportError mini_nn.fast_matmul needs numba: pip install 'mini_nn[fast]' "
                                       "| cause: ModuleNotFoundError | name: numba"]


def test_without_numba_lesson_01_still_refuses_bad_shapes():
    code = NO_NUMBA + ("import torch\nfrom mini_nn.matmul import matmul_loops\n"
                       "try: matmul_loops(torch.ones(2, 3), torch.ones(2, 3))\n"
                       "except ValueError as e: print('ValueError')")
    assert run(BIN/'python', '-c', code).stdout.strip() == 'ValueError'


def test_importing_matmul_imports_no_other_lesson():
    "Lesson 01's module stands alone: it no longer reaches into lesson 06 (nor does anything import numba for it)."
    code = "import sys, mini_nn.matmul; print(sorted(m for m in sys.modules if m.startswith('mini_nn.')))"
    assert run(BIN/'python', '-c', code).stdout.strip() == "['mini_nn.guards', 'mini_nn.matmul']"


def test_without_numba_the_benchmark_leaves_out_the_compiled_rungs():
    code = NO_NUMBA + "from mini_nn.bench import matmul_rungs\nprint(list(matmul_rungs()))"
    res = run(BIN/'python', '-c', code)
    assert res.stdout.strip() == "['three loops', 'elementwise', 'broadcast', 'einsum', 'torch @']"
    assert "pip install 'mini_nn[fast]'" in res.stderr


def test_importing_matmul_or_bench_loads_no_numba():
    code = "import sys, mini_nn.matmul, mini_nn.bench; print('numba' in sys.modules)"
    assert run(BIN/'python', '-c', code).stdout.strip() == 'False'


# the SLP vectoriser setting and the on-disk cache -------------------------------------------------------------

def test_slp_is_switched_on_even_if_numba_was_imported_first(monkeypatch):
    monkeypatch.delenv('NUMBA_SLP_VECTORIZE', raising=False)
    code = "import numba\nfrom mini_nn import fast_matmul as fm\nprint(numba.config.SLP_VECTORIZE, fm._CACHE)"
    assert run(BIN/'python', '-c', code).stdout.split() == ['1', 'True']


def test_an_explicit_slp_off_is_respected_and_not_cached(monkeypatch):
    monkeypatch.setenv('NUMBA_SLP_VECTORIZE', '0')
    code = "import numba\nfrom mini_nn import fast_matmul as fm\nprint(numba.config.SLP_VECTORIZE, fm._CACHE)"
    assert run(BIN/'python', '-c', code).stdout.split() == ['0', 'False']


def test_compiled_kernels_are_loaded_from_the_cache_by_a_later_process(monkeypatch):
    "The first process may compile (or load); a second one must load every kernel of the tiled path from disk."
    monkeypatch.delenv('NUMBA_SLP_VECTORIZE', raising=False)
    code = ("import torch\nfrom mini_nn import fast_matmul as fm\n"
            "a = torch.randn(100, 100)\ntorch.testing.assert_close(fm.matmul_tiled(a, a), a @ a)\n"
            "print(*[bool(k.stats.cache_hits) for k in (fm.pack_panels, fm.tiled_kernel)])")
    run(BIN/'python', '-c', code)
    assert run(BIN/'python', '-c', code).stdout.split() == ['True', 'True']



def test_the_tiled_product_reuses_its_packing_buffers():
    """Memory is not allocated afresh for the packed panels and strips of every product. When it was (numba allocating
    them in the kernels), most processes took ~2,000 page faults per 1024×1024 product and ran it a third slower;
    with the buffers kept, at most a few hundred (the fresh result `c` alone is 1,024 pages)."""
    code = ("import resource, torch\nfrom mini_nn.fast_matmul import matmul_tiled\n"
            "a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)\n"
            "for _ in range(3): matmul_tiled(a, b)\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(10): matmul_tiled(a, b)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)")
    faults = float(run(BIN/'python', '-c', code).stdout)
    assert faults < 1000, f"{faults:.0f} page faults per product"

# the benchmark command -------------------------------------------------------------------------------------------

def test_bench_quick_runs_and_saves_csv_and_json(tmp_path):
    out = tmp_path/'results'
    # the backward parts have their own run in tests/test_bench.py
    res = run(BIN/'python', '-m', 'mini_nn.bench', '--quick', '--out', out, '--skip', 'backward', 'tricks', cwd=tmp_path)
    assert 'matmul ladder' in res.stdout and 'import cost beyond `import torch`' in res.stdout
    assert '[' in res.stderr  # the progress bar
    rows = list(csv.DictReader(open(out/'ladder.csv')))
    assert {r['rung'] for r in rows} >= {'three loops', 'einsum', '+ register tile', 'torch @'}
    assert all(r['note'] != 'WRONG RESULT' for r in rows)
    data = json.loads((out/'bench.json').read_text())
    assert set(data) >= {'machine', 'ladder', 'backward', 'imports', 'targets'}
    assert data['imports']['seconds'] > 0
    assert not list(tmp_path.glob('mini_nn_bench'))  # --out was honoured


def test_bench_help_lists_the_options():
    out = run(BIN/'python', '-m', 'mini_nn.bench', '--help').stdout
    for opt in ('--quick', '--out', '--sizes', '--dtype', '--skip'): assert opt in out
