# The ELSA paper's LSA baseline: ELSA-Swin-T's recipe with Swin's shifted-window attention in
# stages 0-2 too, i.e. a Swin-T (docs/elsa_facts.md, "Baselines of the paper's comparison").
_base_ = './elsa-swin-tiny_8xb128_in1k.py'

model = dict(backbone=dict(local_mixer='window'))

# No weight decay on every stage's relative position table (attn.rb); norms and biases by the
# base. There is no ghost head to exempt.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '_delete_': True,
        'attn.rb': dict(decay_mult=0.)
    }))
