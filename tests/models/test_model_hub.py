"""mmelsa's classifiers by name, as mmpretrain users call them: ``import mmelsa`` registers the
classification entries of mmelsa's model index in mmpretrain's ModelHub (list_models, get_model,
the Inferencers), whichever of the two is imported first."""
import os.path as osp
import re
import subprocess
import sys

import pytest
import yaml
from mmengine import Config

pytest.importorskip('mmpretrain')

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def metafile_names(kind):
    """Model names of the metafiles, split by the toolbox their config is written for."""
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    names = {'cls': [], 'other': []}
    for rel in imports:
        with open(osp.join(ROOT, rel)) as f:
            for m in yaml.safe_load(f)['Models']:
                # the merged config decides (inherited bases included), not the file's text
                cfg = Config.fromfile(osp.join(ROOT, m['Config']))
                kind_of = 'cls' if cfg.model.type == 'ImageClassifier' else 'other'
                names[kind_of].append(m['Name'].lower())
    return sorted(names[kind])


def run(code):
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return res.stdout


def test_every_classifier_in_the_index_and_nothing_else():
    cls = metafile_names('cls')
    assert 'elsa-swin-tiny_8xb128_in1k' in cls and 'elsa-volo-d1_8xb128_in1k' in cls
    # inheriting an mmpretrain config through a local base is enough
    assert 'elsa-swin-base_8xb128_in1k' in cls and 'ddf-add-resnet101_8xb128-120e_in1k' in cls
    assert 'elsa-swin-toy_1xb32-8e_toy-cls-64px' in cls
    assert any(n.startswith('mask-rcnn') for n in metafile_names('other'))


@pytest.mark.parametrize('first', ['mmelsa', 'mmpretrain'])
def test_list_models_finds_mmelsas_classifiers(first):
    second = {'mmelsa': 'mmpretrain', 'mmpretrain': 'mmelsa'}[first]
    out = run(f'import {first}, {second}, mmpretrain\n'
              'print(sorted(set(mmpretrain.list_models("*elsa*") + mmpretrain.list_models("ddf*")'
              ' + mmpretrain.list_models("*convstem*"))))\n'
              'print(len(mmpretrain.list_models("resnet50_8xb32_in1k")))\n')
    listed, resnet = out.strip().splitlines()[-2:]
    assert eval(listed) == metafile_names('cls')  # noqa: S307 (our own printed list)
    assert resnet == '1'  # mmpretrain's own models are still there


@pytest.mark.slow
def test_get_model_and_the_inferencer_with_a_local_file(tmp_path):
    ckpt = tmp_path / 'elsa-swin-tiny.pth'
    img = tmp_path / 'img.png'
    out = run(
        'import numpy as np, torch, mmelsa, mmpretrain\n'
        'from PIL import Image\n'
        'from mmpretrain import ImageClassificationInferencer, get_model\n'
        'model = get_model("elsa-swin-tiny_8xb128_in1k")\n'
        'assert type(model.backbone).__name__ == "ELSASwinTransformer"\n'
        'assert model.backbone.arch_settings["group_width"] == 4\n'
        'torch.manual_seed(0)\n'
        'with torch.no_grad():\n'
        '    model.head.fc.bias.copy_(torch.arange(1000.) / 100)\n'
        f'torch.save(dict(state_dict=model.state_dict()), {str(ckpt)!r})\n'
        f'Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save({str(img)!r})\n'
        'inf = ImageClassificationInferencer("elsa-swin-tiny_8xb128_in1k", '
        f'pretrained={str(ckpt)!r})\n'
        f'res = inf({str(img)!r})[0]\n'
        'print("pred", res["pred_label"], len(res["pred_scores"]))\n')
    # the Inferencer's progress bar ends without a newline: the print may share its line
    found = re.findall(r'pred (\d+) (\d+)', out)
    assert found, out[-2000:]
    label, n = found[-1]
    assert n == '1000' and 0 <= int(label) < 1000


def test_registration_is_idempotent():
    run('import importlib, mmelsa, mmpretrain\n'
        'from mmelsa.models import mmpretrain_hub\n'
        'n = len(mmpretrain.list_models("*elsa*"))\n'
        'mmpretrain_hub.register_mmpretrain_models()\n'
        'importlib.reload(mmelsa.registry)\n'
        'assert len(mmpretrain.list_models("*elsa*")) == n\n')
