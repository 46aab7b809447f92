"""pytorch2onnx.py --part model / backbone without --shape takes --image's size (failed
before: '--part model needs --shape H W' although --image gives one)."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = osp.join(REPO, 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py')


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    from mmelsa.datasets.toy import generate_toy_coco
    coco = generate_toy_coco(str(tmp_path_factory.mktemp('toy')), seed=0, num_train=1,
                             num_val=1)
    val = osp.join(coco, 'val')
    return osp.join(val, sorted(os.listdir(val))[0])  # 128 x 160


@pytest.mark.parametrize('part,first_output', [('backbone', '(1, 32, 32, 40)'),
                                               ('model', '(1, 64, 32, 40)')])
def test_part_takes_the_image_size(tmp_path, image, part, first_output):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = tmp_path / f'{part}.onnx'
    res = subprocess.run([sys.executable, osp.join(REPO, 'tools/deployment/pytorch2onnx.py'),
                          DET, '--part', part, '--legacy', '--image', image, '--out', str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f'output 0 {first_output}: max |onnxruntime - pytorch|' in res.stdout, res.stdout
    assert out.is_file()
